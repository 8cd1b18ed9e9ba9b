//! Two deployments compared from their manifests (`cdeploy diff`): the files added,
//! removed and changed, and the settings, rules and server that differ.

use std::collections::BTreeSet;

use crate::api::{ChangedFile, DeploymentDiff, DiffFile, SettingChange};
use crate::manifest::Manifest;
use crate::rules::Rules;

/// What changed from `from` to `to`.
pub fn manifests(from: &Manifest, to: &Manifest) -> DeploymentDiff {
    let mut diff = DeploymentDiff {
        from: from.id.clone(),
        to: to.id.clone(),
        ..Default::default()
    };
    for (path, old) in &from.files {
        match to.files.get(path) {
            None => diff.removed.push(DiffFile {
                path: path.clone(),
                size: old.size,
            }),
            Some(new) if new.hash != old.hash => diff.changed.push(ChangedFile {
                path: path.clone(),
                from_size: old.size,
                to_size: new.size,
            }),
            Some(_) => diff.unchanged += 1,
        }
    }
    diff.added = to
        .files
        .iter()
        .filter(|(path, _)| !from.files.contains_key(*path))
        .map(|(path, new)| DiffFile {
            path: path.clone(),
            size: new.size,
        })
        .collect();
    let mut settings = Settings(Vec::new());
    settings.compare("spa", from.site.spa, to.site.spa);
    settings.compare("clean_urls", from.site.clean_urls, to.site.clean_urls);
    settings.rules(
        "redirect",
        &redirect_lines(&from.rules),
        &redirect_lines(&to.rules),
    );
    settings.rules(
        "header",
        &header_lines(&from.rules),
        &header_lines(&to.rules),
    );
    settings.server(from, to);
    diff.settings = settings.0;
    diff
}

struct Settings(Vec<SettingChange>);

impl Settings {
    fn compare<T: PartialEq + ToString>(&mut self, setting: &str, from: T, to: T) {
        if from != to {
            self.0.push(SettingChange {
                setting: setting.to_string(),
                from: Some(from.to_string()),
                to: Some(to.to_string()),
            });
        }
    }

    /// Rules only one side has, as their lines; the same rules in another order (the
    /// first match wins, so order matters) as one change.
    fn rules(&mut self, kind: &str, from: &[String], to: &[String]) {
        if from == to {
            return;
        }
        let (old, new): (BTreeSet<&String>, BTreeSet<&String>) =
            (from.iter().collect(), to.iter().collect());
        let before = self.0.len();
        for line in from.iter().filter(|l| !new.contains(l)) {
            self.0.push(SettingChange {
                setting: kind.to_string(),
                from: Some(line.clone()),
                to: None,
            });
        }
        for line in to.iter().filter(|l| !old.contains(l)) {
            self.0.push(SettingChange {
                setting: kind.to_string(),
                from: None,
                to: Some(line.clone()),
            });
        }
        if self.0.len() == before {
            self.0.push(SettingChange {
                setting: format!("{kind} order"),
                from: Some(from.join("\n")),
                to: Some(to.join("\n")),
            });
        }
    }

    fn server(&mut self, from: &Manifest, to: &Manifest) {
        match (&from.server, &to.server) {
            (None, None) => {}
            (Some(a), Some(b)) => {
                self.compare("server.kind", &a.kind, &b.kind);
                self.compare("server.node", &a.node, &b.node);
                self.compare("server.command", a.command.join(" "), b.command.join(" "));
                self.compare("server.cwd", &a.cwd, &b.cwd);
                self.compare("server.health", &a.health, &b.health);
            }
            (a, b) => self.0.push(SettingChange {
                setting: "server".into(),
                from: a.as_ref().map(|s| s.command.join(" ")),
                to: b.as_ref().map(|s| s.command.join(" ")),
            }),
        }
    }
}

/// Redirect rules as `_redirects` lines.
fn redirect_lines(rules: &Rules) -> Vec<String> {
    rules.redirects.iter().map(ToString::to_string).collect()
}

/// Header rules as `<path>: <Name>: <value>` and `<path>: ! <Name>` lines.
fn header_lines(rules: &Rules) -> Vec<String> {
    rules
        .headers
        .iter()
        .flat_map(|h| {
            let set = h
                .set
                .iter()
                .map(move |(n, v)| format!("{}: {n}: {v}", h.path));
            let removed = h.remove.iter().map(move |n| format!("{}: ! {n}", h.path));
            set.chain(removed)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::{FileEntry, Site};
    use crate::rules::{compile, Sources};

    fn manifest(id: &str, files: &[(&str, &str, u64)], redirects: &str) -> Manifest {
        Manifest {
            id: id.into(),
            slug: "app".into(),
            created_at: String::new(),
            files: files
                .iter()
                .map(|(path, hash, size)| {
                    let entry = FileEntry {
                        hash: hash.to_string(),
                        size: *size,
                        content_type: "text/html".into(),
                        encodings: Vec::new(),
                    };
                    (path.to_string(), entry)
                })
                .collect(),
            site: Site {
                spa: false,
                clean_urls: true,
            },
            rules: compile(Sources {
                redirects_file: Some(redirects),
                ..Default::default()
            })
            .unwrap(),
            server: None,
            preview: Some(false),
        }
    }

    #[test]
    fn files_settings_and_rules_that_changed() {
        let a = manifest(
            "a",
            &[
                ("/index.html", "h1", 10),
                ("/old.js", "h2", 20),
                ("/same.css", "h3", 5),
            ],
            "/blog/* /news/:splat 301\n/a /b 302\n",
        );
        let mut b = manifest(
            "b",
            &[
                ("/index.html", "h4", 12),
                ("/new.js", "h5", 30),
                ("/same.css", "h3", 5),
            ],
            "/a /b 302\n/api/* https://api.example.com/:splat 200\n",
        );
        b.site.spa = true;
        let d = manifests(&a, &b);
        assert_eq!(
            d.added,
            [DiffFile {
                path: "/new.js".into(),
                size: 30
            }]
        );
        assert_eq!(
            d.removed,
            [DiffFile {
                path: "/old.js".into(),
                size: 20
            }]
        );
        assert_eq!(
            d.changed,
            [ChangedFile {
                path: "/index.html".into(),
                from_size: 10,
                to_size: 12
            }]
        );
        assert_eq!(d.unchanged, 1);
        let shown: Vec<(String, Option<String>, Option<String>)> = d
            .settings
            .into_iter()
            .map(|s| (s.setting, s.from, s.to))
            .collect();
        assert_eq!(
            shown,
            [
                ("spa".into(), Some("false".into()), Some("true".into())),
                (
                    "redirect".into(),
                    Some("/blog/* /news/:splat 301".into()),
                    None
                ),
                (
                    "redirect".into(),
                    None,
                    Some("/api/* https://api.example.com/:splat 200".into())
                ),
            ]
        );
        // The same rules in another order are a change (the first match wins).
        let c = manifest("c", &[], "/x /y 302\n/x /z 302\n");
        let e = manifest("e", &[], "/x /z 302\n/x /y 302\n");
        let d = manifests(&c, &e);
        assert_eq!(d.settings.len(), 1);
        assert_eq!(d.settings[0].setting, "redirect order");
        assert!(manifests(&c, &c).settings.is_empty());
    }
}
