//! The package manager a build installs with (npm, pnpm, Yarn classic or berry, Bun):
//! `packageManager` in package.json, else what the lockfile's format says, else npm;
//! and the commands each one runs. npm, unless `packageManager` pins it, is the one the
//! build's Node.js bundles ([`BUNDLED_NPM`]), within what `engines.npm` allows.

use std::path::Path;

use serde::Serialize;

use super::npm_lock::refused_by_npm_11;
use super::project::Project;
use super::repo_file::read_repo_file;

/// Lockfiles, in the order their package managers are detected.
pub const LOCKFILES: &[&str] = &[
    "pnpm-lock.yaml",
    "yarn.lock",
    "bun.lock",
    "bun.lockb",
    "package-lock.json",
    "npm-shrinkwrap.json",
];

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum PackageManager {
    Npm,
    Pnpm,
    /// Yarn 1.
    YarnClassic,
    /// Yarn 2 and later.
    YarnBerry,
    Bun,
}

impl PackageManager {
    /// The command users type.
    pub fn command(self) -> &'static str {
        match self {
            PackageManager::Npm => "npm",
            PackageManager::Pnpm => "pnpm",
            PackageManager::YarnClassic | PackageManager::YarnBerry => "yarn",
            PackageManager::Bun => "bun",
        }
    }

    /// How it is named in the log.
    pub fn label(self) -> &'static str {
        match self {
            PackageManager::Npm => "npm",
            PackageManager::Pnpm => "pnpm",
            PackageManager::YarnClassic => "Yarn classic",
            PackageManager::YarnBerry => "Yarn",
            PackageManager::Bun => "Bun",
        }
    }

    /// The npm registry package that ships it.
    pub fn registry_package(self) -> &'static str {
        match self {
            PackageManager::Npm => "npm",
            PackageManager::Pnpm => "pnpm",
            PackageManager::YarnClassic => "yarn",
            PackageManager::YarnBerry => "@yarnpkg/cli-dist",
            PackageManager::Bun => "@oven/bun-linux-x64",
        }
    }

    /// The install that never changes the lockfile (and fails when it is out of date).
    pub fn frozen_install(self, has_lockfile: bool) -> &'static str {
        match (self, has_lockfile) {
            (PackageManager::Npm, true) => "npm ci",
            (PackageManager::Npm, false) => "npm install",
            (PackageManager::Pnpm, true) => "pnpm install --frozen-lockfile",
            (PackageManager::Pnpm, false) => "pnpm install",
            (PackageManager::YarnClassic, true) => "yarn install --frozen-lockfile",
            (PackageManager::YarnClassic, false) => "yarn install",
            (PackageManager::YarnBerry, true) => "yarn install --immutable",
            (PackageManager::YarnBerry, false) => "yarn install",
            (PackageManager::Bun, true) => "bun install --frozen-lockfile",
            (PackageManager::Bun, false) => "bun install",
        }
    }

    /// Runs a package script.
    pub fn run_script(self, script: &str) -> String {
        format!("{} run {script}", self.command())
    }

    /// Adds a development dependency to the install, for this build only: npm leaves
    /// package.json and the lockfile as they are; the others write the build's copy of
    /// them (Yarn's immutable mode, on in CI, is lifted for the one command).
    pub fn add_dev(self, spec: &str) -> String {
        match self {
            PackageManager::Npm => format!("npm install --no-save --no-audit --no-fund {spec}"),
            PackageManager::Pnpm => format!("pnpm add -D {spec}"),
            PackageManager::YarnClassic => format!("yarn add -D {spec}"),
            PackageManager::YarnBerry => {
                format!("YARN_ENABLE_IMMUTABLE_INSTALLS=false yarn add -D {spec}")
            }
            PackageManager::Bun => format!("bun add -D {spec}"),
        }
    }

    /// Runs a binary of an installed dependency.
    pub fn exec(self, bin: &str) -> String {
        match self {
            PackageManager::Npm => format!("npx --no-install {bin}"),
            PackageManager::Pnpm => format!("pnpm exec {bin}"),
            PackageManager::YarnClassic | PackageManager::YarnBerry => format!("yarn {bin}"),
            PackageManager::Bun => format!("bun run {bin}"),
        }
    }
}

/// npm's version when `packageManager` does not pin it: the one the build's Node.js
/// bundles (the Node.js release, hence npm's, is known only at build time). With
/// `engines.npm`, the version is that range, still met by the bundled line when it can.
pub const BUNDLED_NPM: &str = "bundled";

/// The package manager, its version (exact, a range or major to resolve, or
/// [`BUNDLED_NPM`]) and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PmChoice {
    pub name: PackageManager,
    pub version: String,
    /// Corepack-style hash from `packageManager` (`sha512.<hex>`, `sha224.<hex>`…): the
    /// fetched package must match it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hash: Option<String>,
    pub source: String,
    #[serde(skip)]
    pub has_lockfile: bool,
}

/// `packageManager` in package.json (exact version, corepack's format), else the
/// lockfile at the install root (its format tells the major), else npm.
pub(super) fn package_manager(root: &Path, install_dir: &Path, project: &Project) -> PmChoice {
    let lockfile = LOCKFILES
        .iter()
        .find(|l| install_dir.join(l).is_file())
        .copied();
    let has_lockfile = lockfile.is_some();
    if let Some(choice) = declared(root, install_dir, project)
        .and_then(|decl| parse_package_manager_field(&decl, has_lockfile))
    {
        return choice;
    }
    let read_lock = |name: &str| read_repo_file(root, install_dir, name).ok().flatten();
    let (name, version, why) = from_lockfile(lockfile, read_lock);
    let (version, source) = if name == PackageManager::Npm {
        // npm installs from npm-shrinkwrap.json when both are there.
        let lock = ["npm-shrinkwrap.json", "package-lock.json"]
            .into_iter()
            .find(|l| install_dir.join(l).is_file())
            .and_then(read_lock);
        npm_choice(project, lock.as_deref(), why)
    } else {
        (version.to_string(), format!("from {why}"))
    };
    PmChoice {
        name,
        version,
        hash: None,
        source,
        has_lockfile,
    }
}

/// npm's version and why, when `packageManager` does not pin it: `volta.npm` (exact),
/// else the bundled line within `engines.npm` (a range npm itself would check); but npm
/// 10 for a lockfile npm 11's `npm ci` would call out of sync, when `engines.npm` allows
/// an npm 10. `why`: the lockfile found, or "no lockfile".
fn npm_choice(project: &Project, lock: Option<&str>, why: &str) -> (String, String) {
    if let Some(v) = project.str_at(&["volta", "npm"]).filter(|v| is_exact(v)) {
        return (v, "from volta.npm in package.json".into());
    }
    let engines = project.str_at(&["engines", "npm"]).filter(|r| is_range(r));
    let refused = lock.and_then(refused_by_npm_11).map(|missing| {
        format!(
            "npm 11's `npm ci` would call it out of sync: it lacks optional packages it lists, such as {}",
            missing.join(" and ")
        )
    });
    let ten = nodejs_semver::Range::parse("10").expect("a range");
    match (engines, refused) {
        (Some(range), Some(refused)) => {
            let within = nodejs_semver::Range::parse(&range)
                .ok()
                .and_then(|r| r.intersect(&ten));
            match within {
                Some(both) => (
                    both.to_string(),
                    format!("from {why} ({refused}) within engines.npm in package.json"),
                ),
                None => (
                    range,
                    format!(
                        "from engines.npm in package.json, though {why} needs npm 10 ({refused})"
                    ),
                ),
            }
        }
        (Some(range), None) => (range, format!("from engines.npm in package.json ({why})")),
        (None, Some(refused)) => ("10".into(), format!("from {why} ({refused})")),
        (None, None) => (BUNDLED_NPM.into(), format!("from {why}")),
    }
}

/// An exact version (`10.9.2`, as `packageManager` and `volta` pin them) and nothing
/// more: `10.9.2 || ^11` parses as 10.9.2 too.
pub fn is_exact(v: &str) -> bool {
    nodejs_semver::Version::parse(v).is_ok_and(|p| p.to_string() == v.trim_start_matches('v'))
}

/// Longest `engines.npm` read as a range: real ones are short, and a build matches the
/// range against every npm release (a megabyte of `1 || 1 || …` would stall it).
const MAX_RANGE: usize = 128;

/// A range of versions as npm reads `engines.npm` (`>=10`, `^10 || ^11`, `10.x`), not a
/// note ("please-use-yarn", "use yarn 1", which a lenient parser would read as a range).
fn is_range(r: &str) -> bool {
    if r.len() > MAX_RANGE {
        return false;
    }
    let words = r
        .split(|c: char| !c.is_ascii_alphabetic())
        .filter(|w| !w.is_empty())
        .all(|w| matches!(w, "x" | "X" | "v"));
    words && nodejs_semver::Range::parse(r).is_ok()
}

/// `packageManager` of the project's package.json, else of the workspace root's: it
/// names the package manager of the whole repository.
fn declared(root: &Path, install_dir: &Path, project: &Project) -> Option<String> {
    project.str_at(&["packageManager"]).or_else(|| {
        (install_dir != project.dir)
            .then(|| {
                read_repo_file(root, install_dir, "package.json")
                    .ok()
                    .flatten()
                    .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
                    .and_then(|p| p.get("packageManager")?.as_str().map(String::from))
            })
            .flatten()
    })
}

/// The package manager a lockfile belongs to, the major its format implies, and the
/// reason shown in the log; `read_lock` reads a lockfile's text.
fn from_lockfile(
    lockfile: Option<&str>,
    read_lock: impl Fn(&str) -> Option<String>,
) -> (PackageManager, &'static str, &'static str) {
    match lockfile {
        Some("pnpm-lock.yaml") => {
            let v = read_lock("pnpm-lock.yaml")
                .and_then(|t| {
                    t.lines()
                        .find_map(|l| l.strip_prefix("lockfileVersion:"))
                        .map(|v| v.trim().trim_matches(|c| c == '\'' || c == '"').to_string())
                })
                .unwrap_or_default();
            let major = match v.split('.').next().unwrap_or("") {
                "5" => "7",
                "6" => "8",
                _ => "10",
            };
            (PackageManager::Pnpm, major, "pnpm-lock.yaml")
        }
        Some("yarn.lock") => {
            let text = read_lock("yarn.lock").unwrap_or_default();
            if text.contains("__metadata:") {
                (PackageManager::YarnBerry, "4", "yarn.lock (Yarn 2+ format)")
            } else {
                (
                    PackageManager::YarnClassic,
                    "1",
                    "yarn.lock (Yarn 1 format)",
                )
            }
        }
        Some("bun.lock") | Some("bun.lockb") => (PackageManager::Bun, "1", "bun.lock"),
        Some(l) => (
            PackageManager::Npm,
            BUNDLED_NPM,
            if l == "package-lock.json" {
                "package-lock.json"
            } else {
                "npm-shrinkwrap.json"
            },
        ),
        None => (PackageManager::Npm, BUNDLED_NPM, "no lockfile"),
    }
}

/// `"pnpm@9.15.0"` or `"yarn@4.5.1+sha512.abc…"`: corepack's format, an exact version.
pub fn parse_package_manager_field(decl: &str, has_lockfile: bool) -> Option<PmChoice> {
    let (name, rest) = decl.trim().split_once('@')?;
    let (version, hash) = match rest.split_once('+') {
        Some((v, h)) => (v, Some(h.to_string())),
        None => (rest, None),
    };
    let parsed = nodejs_semver::Version::parse(version).ok()?;
    let pm = match name {
        "npm" => PackageManager::Npm,
        "pnpm" => PackageManager::Pnpm,
        "yarn" if parsed.major <= 1 => PackageManager::YarnClassic,
        "yarn" => PackageManager::YarnBerry,
        "bun" => PackageManager::Bun,
        _ => return None,
    };
    Some(PmChoice {
        name: pm,
        version: parsed.to_string(),
        hash,
        source: "from packageManager in package.json".into(),
        has_lockfile,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::test_support::plan_of;

    #[test]
    fn package_managers_from_lockfiles_and_the_package_manager_field() {
        let p = plan_of(&[
            ("package.json", r#"{"scripts":{"build":"x"}}"#),
            ("pnpm-lock.yaml", "lockfileVersion: '9.0'\n"),
        ]);
        assert_eq!(p.install.as_deref(), Some("pnpm install --frozen-lockfile"));
        assert_eq!(p.build.as_deref(), Some("pnpm run build"));
        let pm = p.package_manager.unwrap();
        assert_eq!((pm.name, pm.version.as_str()), (PackageManager::Pnpm, "10"));
        let p = plan_of(&[
            ("package.json", "{}"),
            ("yarn.lock", "# yarn lockfile v1\n"),
        ]);
        assert_eq!(p.install.as_deref(), Some("yarn install --frozen-lockfile"));
        assert_eq!(p.build, None);
        let p = plan_of(&[
            ("package.json", "{}"),
            ("yarn.lock", "__metadata:\n  version: 8\n"),
        ]);
        assert_eq!(p.install.as_deref(), Some("yarn install --immutable"));
        let p = plan_of(&[
            (
                "package.json",
                r#"{"packageManager":"pnpm@9.15.0+sha512.abc"}"#,
            ),
            ("pnpm-lock.yaml", ""),
        ]);
        let pm = p.package_manager.unwrap();
        assert_eq!(pm.version, "9.15.0");
        assert_eq!(pm.hash.as_deref(), Some("sha512.abc"));
        assert_eq!(pm.source, "from packageManager in package.json");
        let p = plan_of(&[("package.json", r#"{"packageManager":"yarn@1.22.22"}"#)]);
        assert_eq!(p.package_manager.unwrap().name, PackageManager::YarnClassic);
        assert_eq!(p.install.as_deref(), Some("yarn install"));
    }

    #[test]
    fn npm_is_the_one_node_bundles_within_engines_npm() {
        let lock = ("package-lock.json", "{}");
        let p = plan_of(&[("package.json", "{}"), lock]);
        let pm = p.package_manager.unwrap();
        assert_eq!(pm.version, BUNDLED_NPM);
        assert_eq!(pm.source, "from package-lock.json");
        let p = plan_of(&[("package.json", r#"{"engines":{"npm":">=11.2"}}"#), lock]);
        let pm = p.package_manager.unwrap();
        assert_eq!(pm.version, ">=11.2");
        assert_eq!(
            pm.source,
            "from engines.npm in package.json (package-lock.json)"
        );
        // Not a range: npm as Node.js bundles it.
        let p = plan_of(&[("package.json", r#"{"engines":{"npm":"use yarn"}}"#)]);
        assert_eq!(p.package_manager.unwrap().version, BUNDLED_NPM);
        // packageManager pins npm exactly, whatever engines say.
        let p = plan_of(&[(
            "package.json",
            r#"{"packageManager":"npm@10.9.2","engines":{"npm":">=11"}}"#,
        )]);
        assert_eq!(p.package_manager.unwrap().version, "10.9.2");
        // A lockfile npm 10 wrote without another platform's optional packages: npm 10.
        let npm10 = r#"{"lockfileVersion":3,"packages":{"":{},
            "node_modules/a":{"optionalDependencies":{"a-darwin":"1"}}}}"#;
        let p = plan_of(&[("package.json", "{}"), ("package-lock.json", npm10)]);
        let pm = p.package_manager.unwrap();
        assert_eq!(pm.version, "10");
        assert!(
            pm.source.contains("would call it out of sync"),
            "{}",
            pm.source
        );
        assert!(pm.source.contains("such as a-darwin"), "{}", pm.source);
        // ... within engines.npm when it allows an npm 10, else engines.npm rules.
        let with_engines = |range: &str| {
            let package = format!(r#"{{"engines":{{"npm":"{range}"}}}}"#);
            let p = plan_of(&[("package.json", &package), ("package-lock.json", npm10)]);
            p.package_manager.unwrap()
        };
        let pm = with_engines(">=10.5");
        assert_eq!(pm.version, ">=10.5.0 <11.0.0-0");
        assert!(pm.source.contains("within engines.npm"), "{}", pm.source);
        assert_eq!(with_engines(">=11").version, ">=11");
        // npm-shrinkwrap.json is what npm installs from when both are there.
        let p = plan_of(&[
            ("package.json", "{}"),
            ("npm-shrinkwrap.json", npm10),
            ("package-lock.json", "{}"),
        ]);
        assert_eq!(p.package_manager.unwrap().version, "10");
        // volta.npm pins it, as volta.node pins Node.js.
        let p = plan_of(&[("package.json", r#"{"volta":{"npm":"10.8.1"}}"#), lock]);
        let pm = p.package_manager.unwrap();
        assert_eq!(
            (pm.version.as_str(), pm.source.as_str()),
            ("10.8.1", "from volta.npm in package.json")
        );
        // Notes that a lenient parser would take for ranges are not ranges.
        let long = vec![">=1"; 100].join(" || ");
        for note in ["use yarn 1", "please use npm 10", "latest", &long] {
            let package = format!(r#"{{"engines":{{"npm":"{note}"}}}}"#);
            let p = plan_of(&[("package.json", &package), lock]);
            assert_eq!(p.package_manager.unwrap().version, BUNDLED_NPM, "{note}");
        }
        // engines.npm is npm's: a pnpm project's pnpm is what its lockfile says.
        let p = plan_of(&[
            ("package.json", r#"{"engines":{"npm":">=11"}}"#),
            ("pnpm-lock.yaml", "lockfileVersion: '9.0'\n"),
        ]);
        assert_eq!(p.package_manager.unwrap().version, "10");
    }
}
