//! Output discipline: stdout carries only the result (a URL, a table, or one JSON
//! document); everything else goes to stderr, with spinners and bars only on a terminal.

use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

use cdeploy_core::event::{Event, EventBody, Step, Stream};
use console::style;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::exit::CliError;

#[derive(Debug, Clone, Copy)]
pub struct Printer {
    pub json: bool,
    pub quiet: bool,
    /// stderr is a terminal: spinners and bars are allowed.
    pub tty: bool,
}

impl Printer {
    pub fn new(json: bool, quiet: bool) -> Self {
        Printer {
            json,
            quiet,
            tty: std::io::stderr().is_terminal() && std::env::var_os("CI").is_none(),
        }
    }

    /// A progress message on stderr.
    pub fn info(&self, msg: impl std::fmt::Display) {
        if !self.quiet {
            eprintln!("{msg}");
        }
    }

    pub fn warn(&self, msg: impl std::fmt::Display) {
        if !self.quiet {
            eprintln!("{} {msg}", style("warning:").yellow().bold());
        }
    }

    /// The result on stdout.
    pub fn result(&self, text: impl std::fmt::Display) {
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "{text}");
        let _ = out.flush();
    }

    pub fn json_result(&self, value: &impl serde::Serialize) {
        self.result(serde_json::to_string_pretty(value).expect("serializable"));
    }

    /// Reports an error: on stderr always, and as a JSON document on stdout with `--json`.
    pub fn error(&self, e: &CliError) {
        if self.json {
            let mut err = serde_json::json!({ "code": e.code, "message": e.message });
            if let Some(h) = &e.hint {
                err["hint"] = h.clone().into();
            }
            self.json_result(&serde_json::json!({ "error": err }));
        }
        eprintln!("{} {}", style("error:").red().bold(), e.message);
        if let Some(h) = &e.hint {
            eprintln!("  {} {h}", style("hint:").cyan());
        }
    }
}

/// Shows a deployment's events as they arrive: on a terminal one spinner for the
/// running step (a bar while uploading) with the build output scrolling above it and a
/// `✓ step  time` line as each step ends; elsewhere plain `[step] line` lines.
pub struct Renderer {
    printer: Printer,
    tty: Option<Tty>,
    last_step: Option<Step>,
    last_plain_progress: Instant,
}

struct Tty {
    bar: ProgressBar,
    step: Option<(Step, Instant)>,
}

fn spinner_style() -> ProgressStyle {
    ProgressStyle::with_template("{spinner:.cyan} {prefix:.bold} {wide_msg:.dim}")
        .expect("valid template")
        .tick_chars("⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏ ")
}

fn bar_style() -> ProgressStyle {
    ProgressStyle::with_template(
        "{spinner:.cyan} {prefix:.bold} [{bar:30.cyan/blue}] {bytes}/{total_bytes} {msg}",
    )
    .expect("valid template")
    .progress_chars("=> ")
}

impl Renderer {
    pub fn new(printer: Printer) -> Self {
        let tty = (printer.tty && !printer.quiet).then(|| Tty {
            bar: ProgressBar::hidden(),
            step: None,
        });
        Renderer {
            printer,
            tty,
            last_step: None,
            last_plain_progress: Instant::now() - Duration::from_secs(5),
        }
    }

    /// A bar for a local task (the CLI's own upload), in the same style as build steps.
    pub fn local_bar(&self, label: &str, total_bytes: u64) -> ProgressBar {
        match &self.tty {
            Some(_) => {
                let pb =
                    ProgressBar::with_draw_target(Some(total_bytes), ProgressDrawTarget::stderr());
                pb.set_style(bar_style());
                pb.set_prefix(label.to_string());
                pb.enable_steady_tick(Duration::from_millis(100));
                pb
            }
            None => ProgressBar::hidden(),
        }
    }

    pub fn event(&mut self, e: &Event) {
        if self.printer.quiet {
            return;
        }
        match &e.body {
            EventBody::Log { step, stream, line } => {
                self.enter(*step);
                match &self.tty {
                    Some(t) => {
                        let shown = match stream {
                            Stream::System => style(line.as_str()).cyan().dim(),
                            Stream::Stdout | Stream::Stderr => style(line.as_str()).dim(),
                        };
                        t.bar.println(format!("  {shown}"));
                        t.bar.set_message(line.clone());
                    }
                    None => {
                        let text = match stream {
                            Stream::System => style(line.as_str()).cyan().to_string(),
                            Stream::Stdout | Stream::Stderr => line.clone(),
                        };
                        eprintln!("[{}] {text}", step.as_str());
                    }
                }
            }
            EventBody::Progress {
                step,
                done,
                total,
                bytes,
                total_bytes,
            } => {
                self.enter(*step);
                match &self.tty {
                    Some(t) => {
                        t.bar.set_style(bar_style());
                        t.bar.set_length(*total_bytes);
                        t.bar.set_position(*bytes);
                        t.bar.set_message(format!("{done}/{total} files"));
                    }
                    None => {
                        if done == total
                            || self.last_plain_progress.elapsed() > Duration::from_secs(2)
                        {
                            self.last_plain_progress = Instant::now();
                            eprintln!(
                                "[{}] {done}/{total} files, {bytes}/{total_bytes} bytes",
                                step.as_str()
                            );
                        }
                    }
                }
            }
            EventBody::Status { .. } => {
                if let Some(status) = e.body.terminal_status() {
                    self.finish(status == cdeploy_core::event::Status::Ready);
                }
            }
        }
    }

    /// Moves the spinner to `step`, printing the previous one as done.
    fn enter(&mut self, step: Step) {
        if self.last_step == Some(step) {
            return;
        }
        self.last_step = Some(step);
        if let Some(t) = &mut self.tty {
            if let Some((prev, started)) = t.step.take() {
                t.bar.println(step_line(prev, started, true));
            } else {
                t.bar = ProgressBar::new_spinner();
                t.bar.enable_steady_tick(Duration::from_millis(80));
            }
            t.bar.set_style(spinner_style());
            t.bar.set_prefix(format!("{:<9}", step.as_str()));
            t.bar.set_message("");
            t.step = Some((step, Instant::now()));
        }
    }

    pub fn finish(&mut self, ok: bool) {
        if let Some(t) = &mut self.tty {
            if let Some((prev, started)) = t.step.take() {
                t.bar.println(step_line(prev, started, ok));
            }
            t.bar.finish_and_clear();
        }
    }
}

fn step_line(step: Step, started: Instant, ok: bool) -> String {
    let mark = if ok {
        style("✓").green().bold()
    } else {
        style("✗").red().bold()
    };
    format!(
        "{mark} {:<9} {}",
        style(step.as_str()).bold(),
        style(format!("{:.1}s", started.elapsed().as_secs_f64())).dim()
    )
}
