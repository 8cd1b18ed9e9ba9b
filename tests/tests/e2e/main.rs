//! End-to-end suite: the built binaries driven as a user would, against real git, npm
//! and Chromium. Run `cargo build --workspace` first (the README's test command does).

mod bad_input;
mod big;
mod cli;
mod components;
mod crash;
mod dashboard;
mod distributed;
mod domains;
mod frameworks;
mod gc;
mod https;
mod isolation;
mod lifecycle;
mod limits;
mod load;
mod logs;
mod notify;
mod oidc;
mod openapi;
mod protection;
mod races;
mod rules;
mod secrets;
mod security;
mod server_apps;
mod skips;
mod source;
mod tokens;
mod upgrade;
mod vite;
mod webhooks;
mod zero_config;
