use std::process::Command;

use super::*;

fn write(root: &Path, files: &[(&str, &str)]) {
    for (path, text) in files {
        let p = root.join(path);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    }
}

fn git(dir: &Path, args: &[&str]) {
    let ok = Command::new("git")
        .args([
            "-c",
            "user.name=t",
            "-c",
            "user.email=t@t",
            "-c",
            "init.defaultBranch=main",
        ])
        .args(args)
        .current_dir(dir)
        .status()
        .unwrap()
        .success();
    assert!(ok, "git {args:?}");
}

fn monorepo() -> tempfile::TempDir {
    let d = tempfile::tempdir().unwrap();
    write(
        d.path(),
        &[
            (
                "package.json",
                r#"{"private":true,"workspaces":["apps/*","packages/*"]}"#,
            ),
            ("package-lock.json", "{}"),
            ("cdeploy.toml", ""),
            (
                "apps/a/package.json",
                r#"{"name":"a","dependencies":{"shared":"*"}}"#,
            ),
            ("apps/a/index.js", "a"),
            ("apps/b/package.json", r#"{"name":"b"}"#),
            ("apps/b/index.js", "b"),
            ("packages/shared/package.json", r#"{"name":"shared"}"#),
            ("packages/shared/index.js", "s"),
            ("docs/readme.md", "docs"),
        ],
    );
    git(d.path(), &["init", "-q"]);
    git(d.path(), &["add", "."]);
    git(d.path(), &["commit", "-qm", "one"]);
    d
}

fn spec(source: SourceSpec) -> BuildSpec {
    BuildSpec {
        deployment_id: "dpl_x".into(),
        slug: "a".into(),
        source,
        build: Default::default(),
        env: Default::default(),
        site: Default::default(),
        url: "http://a.localhost".into(),
        promote: true,
        timeout: std::time::Duration::from_secs(60),
        secrets: Default::default(),
        cache_scope: String::new(),
        reuse: None,
    }
}

async fn inputs_of(root: &Path, app: &str, spec: &BuildSpec) -> Result<BuildInputs, String> {
    let storage = cdeploy_storage::LocalStorage::open(root.join(".storage")).unwrap();
    let src = Source {
        spec,
        storage: &storage,
        checkout: root,
        project_dir: &root.join(app),
        install_dir: root,
        toolchain: "node@22.12.0 npm@10.9.0",
    };
    collect(&src, "v1").await
}

fn git_spec() -> BuildSpec {
    spec(SourceSpec::Git {
        url: "https://example.com/r.git".into(),
        git_ref: None,
    })
}

#[test]
fn a_workspace_app_reads_its_folder_its_packages_and_the_files_above() {
    let d = monorepo();
    let root = d.path().canonicalize().unwrap();
    let s = scope(&root, &root.join("apps/a"), &root).unwrap();
    assert_eq!(
        s.folders.into_iter().collect::<Vec<_>>(),
        ["apps/a", "packages/shared"]
    );
    assert_eq!(
        s.files_of.into_iter().collect::<Vec<_>>(),
        ["", "apps", "packages"]
    );
    // A project at the root reads everything.
    let s = scope(&root, &root, &root).unwrap();
    assert_eq!(s.folders.into_iter().collect::<Vec<_>>(), [""]);
    assert!(s.files_of.is_empty());
}

#[test]
fn doubt_is_an_error() {
    let d = monorepo();
    let root = d.path().canonicalize().unwrap();
    std::fs::remove_file(root.join("package-lock.json")).unwrap();
    assert!(scope(&root, &root.join("apps/a"), &root)
        .unwrap_err()
        .contains("no lockfile"));
    std::fs::write(root.join("package-lock.json"), "{}").unwrap();
    std::fs::write(root.join(".gitattributes"), "*.png filter=lfs diff=lfs\n").unwrap();
    assert!(scope(&root, &root.join("apps/a"), &root)
        .unwrap_err()
        .contains("LFS"));
    std::fs::remove_file(root.join(".gitattributes")).unwrap();
    std::fs::write(root.join(".gitmodules"), "").unwrap();
    assert!(scope(&root, &root.join("apps/a"), &root)
        .unwrap_err()
        .contains("submodules"));
}

#[tokio::test]
async fn a_change_elsewhere_keeps_the_digest_and_one_it_reads_changes_it() {
    let d = monorepo();
    let root = d.path().canonicalize().unwrap();
    let spec = git_spec();
    let first = inputs_of(&root, "apps/a", &spec).await.unwrap();
    assert_eq!(first.commit.as_deref().map(str::len), Some(40));
    assert!(first.parts.contains_key("apps/a/"));
    assert!(first.parts.contains_key("package-lock.json"));
    assert!(!first.parts.contains_key("apps/b/"));

    write(
        &root,
        &[("apps/b/index.js", "b2"), ("docs/readme.md", "d2")],
    );
    git(&root, &["commit", "-qam", "b"]);
    let after_b = inputs_of(&root, "apps/a", &spec).await.unwrap();
    assert_eq!(after_b.digest, first.digest);
    assert_ne!(after_b.commit, first.commit);

    write(&root, &[("packages/shared/index.js", "s2")]);
    git(&root, &["commit", "-qam", "shared"]);
    let after_shared = inputs_of(&root, "apps/a", &spec).await.unwrap();
    assert_ne!(after_shared.digest, first.digest);

    // A file at the root (the lockfile) is read by every app.
    let b = inputs_of(&root, "apps/b", &spec).await.unwrap();
    write(&root, &[("package-lock.json", "{\"lockfileVersion\":3}")]);
    git(&root, &["commit", "-qam", "lock"]);
    let b2 = inputs_of(&root, "apps/b", &spec).await.unwrap();
    assert_ne!(b.digest, b2.digest);
}

#[tokio::test]
async fn settings_variables_toolchain_and_target_are_inputs_but_not_force() {
    let d = monorepo();
    let root = d.path().canonicalize().unwrap();
    let base = git_spec();
    let digest = |s: BuildSpec| {
        let root = root.clone();
        async move { inputs_of(&root, "apps/a", &s).await.unwrap().digest }
    };
    let first = digest(base.clone()).await;
    let mut forced = base.clone();
    forced.build.skip_unchanged = Some(false);
    forced.build.cache = Some(false);
    assert_eq!(digest(forced).await, first);
    // A preview's branch URL (the control plane's) is no input; production's own
    // request variable of that name is.
    let mut preview = base.clone();
    preview.promote = false;
    let mut branch = preview.clone();
    branch
        .env
        .insert("CDEPLOY_BRANCH_URL".into(), "http://x--a.localhost".into());
    assert_eq!(digest(branch).await, digest(preview).await);
    let mut production_var = base.clone();
    production_var
        .env
        .insert("CDEPLOY_BRANCH_URL".into(), "https://api.example".into());
    assert_ne!(digest(production_var).await, first);

    let mut var = base.clone();
    var.env.insert("API".into(), "1".into());
    assert_ne!(digest(var).await, first);
    let mut cmd = base.clone();
    cmd.build.command = Some("npm run other".into());
    assert_ne!(digest(cmd).await, first);
    let mut preview = base.clone();
    preview.promote = false;
    assert_ne!(digest(preview).await, first);
}

#[tokio::test]
async fn a_symlink_out_of_what_is_compared_is_doubt() {
    let d = monorepo();
    let root = d.path().canonicalize().unwrap();
    std::os::unix::fs::symlink("../../docs/readme.md", root.join("apps/a/readme.md")).unwrap();
    std::os::unix::fs::symlink("../../packages/shared/index.js", root.join("apps/a/s.js")).unwrap();
    git(&root, &["add", "."]);
    git(&root, &["commit", "-qm", "links"]);
    let e = inputs_of(&root, "apps/a", &git_spec()).await.unwrap_err();
    assert!(e.contains("apps/a/readme.md is a symlink"), "{e}");
    std::fs::remove_file(root.join("apps/a/readme.md")).unwrap();
    git(&root, &["commit", "-qam", "no link out"]);
    inputs_of(&root, "apps/a", &git_spec()).await.unwrap();
}

#[tokio::test]
async fn an_upload_hashes_its_map_like_a_clone_hashes_its_trees() {
    let d = tempfile::tempdir().unwrap();
    let root = d.path().canonicalize().unwrap();
    write(
        &root,
        &[("apps/a/package.json", "{}"), ("package-lock.json", "{}")],
    );
    let storage = cdeploy_storage::LocalStorage::open(root.join(".storage")).unwrap();
    let map = |a: &str| -> SourceMap {
        [
            ("apps/a/package.json".to_string(), "h1".to_string()),
            ("apps/a/index.js".to_string(), a.to_string()),
            ("apps/b/index.js".to_string(), "hb".to_string()),
            ("package-lock.json".to_string(), "hl".to_string()),
        ]
        .into()
    };
    let mut digests = Vec::new();
    for (key, m) in [("m1", map("ha")), ("m2", map("ha")), ("m3", map("ha2"))] {
        cdeploy_storage::put_json(&storage, key, &m).await.unwrap();
        let s = spec(SourceSpec::Upload {
            source_map_key: key.into(),
        });
        let i = inputs_of(&root, "apps/a", &s).await.unwrap();
        assert!(i.commit.is_none());
        digests.push(i.digest);
    }
    assert_eq!(digests[0], digests[1]);
    assert_ne!(digests[0], digests[2]);
}

#[tokio::test]
async fn a_symlinked_file_above_the_project_is_doubt() {
    let d = monorepo();
    let root = d.path().canonicalize().unwrap();
    write(&root, &[("conf/cdeploy.toml", "[build]\n")]);
    std::fs::remove_file(root.join("cdeploy.toml")).unwrap();
    std::os::unix::fs::symlink("conf/cdeploy.toml", root.join("cdeploy.toml")).unwrap();
    git(&root, &["add", "-A"]);
    git(&root, &["commit", "-qm", "linked config"]);
    let e = inputs_of(&root, "apps/a", &git_spec()).await.unwrap_err();
    assert!(e.contains("cdeploy.toml is a symlink"), "{e}");
}

#[tokio::test]
async fn production_url_is_an_input_and_a_preview_url_is_not() {
    let d = monorepo();
    let root = d.path().canonicalize().unwrap();
    let digest = |s: BuildSpec| {
        let root = root.clone();
        async move { inputs_of(&root, "apps/a", &s).await.unwrap().digest }
    };
    let base = git_spec();
    let mut moved = base.clone();
    moved.url = "http://a.example.org".into();
    assert_ne!(digest(base.clone()).await, digest(moved).await);
    let mut p1 = base.clone();
    p1.promote = false;
    p1.url = "http://a--dpl1.localhost".into();
    let mut p2 = p1.clone();
    p2.url = "http://a--dpl2.localhost".into();
    assert_eq!(digest(p1).await, digest(p2).await);
}

#[tokio::test]
async fn a_symlink_to_what_is_compared_is_fine_and_a_file_named_like_a_part_is_a_file() {
    let d = monorepo();
    let root = d.path().canonicalize().unwrap();
    write(&root, &[("AGENTS.md", "one"), ("settings", "theme=blue")]);
    std::os::unix::fs::symlink("AGENTS.md", root.join("CLAUDE.md")).unwrap();
    git(&root, &["add", "-A"]);
    git(&root, &["commit", "-qm", "links inside"]);
    let first = inputs_of(&root, "apps/a", &git_spec()).await.unwrap();
    assert!(first.parts.contains_key("CLAUDE.md"));
    assert!(first.parts.contains_key("./settings"));
    write(&root, &[("settings", "theme=red")]);
    git(&root, &["commit", "-qam", "red"]);
    let second = inputs_of(&root, "apps/a", &git_spec()).await.unwrap();
    assert_ne!(first.digest, second.digest);
}
