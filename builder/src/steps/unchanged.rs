//! A build skipped when nothing it reads changed: its inputs are hashed
//! ([`crate::inputs`]) and recorded through the publisher, which makes the deployment of
//! a ready one's output when one of the project's target was built from the same.

use std::path::Path;
use std::time::Instant;

use cdeploy_core::event::Step;

use super::Build;
use crate::{inputs, spec::Settings, BuildError};

/// Whether the deployment is live already with an earlier one's output (then nothing
/// is left to do). Any doubt, or a publisher that cannot answer, builds.
pub(super) async fn reused(
    b: &Build<'_>,
    settings: &Settings,
    (checkout, project_dir, install_dir): (&Path, &Path, &Path),
    toolchain: &str,
) -> Result<bool, BuildError> {
    let Some(reuse) = &b.spec.reuse else {
        return Ok(false);
    };
    let started = Instant::now();
    let src = inputs::Source {
        spec: b.spec,
        storage: b.storage,
        checkout,
        project_dir,
        install_dir,
        toolchain,
    };
    let mut inputs = match inputs::collect(&src, &reuse.secrets).await {
        Ok(inputs) => inputs,
        Err(why) => {
            let line = format!("Building: whether anything changed cannot be told ({why})");
            b.say(Step::Install, line).await;
            return Ok(false);
        }
    };
    inputs.reuse = settings.build.skip_unchanged != Some(false);
    // The digest itself is never shown: with the parts a reader can guess (files,
    // toolchain), it would let them test guesses of a variable's value.
    let count = inputs.parts.len();
    let answer = match b.publisher.reuse(b.spec, &inputs).await {
        Ok(answer) => answer,
        Err(e) => {
            let line = format!("Building: earlier builds could not be compared with ({e})");
            b.say(Step::Install, line).await;
            return Ok(false);
        }
    };
    let ms = started.elapsed().as_millis();
    let Some(reused) = answer else {
        let line = if inputs.reuse {
            format!("No ready deployment was built from the same {count} inputs, so this one builds (compared in {ms} ms)")
        } else {
            format!("Its {count} inputs recorded; building as asked (--force or [build] skip_unchanged = false)")
        };
        b.say(Step::Install, line).await;
        return Ok(false);
    };
    b.say(
        Step::Activate,
        format!(
            "Unchanged since {}: its build read the same {count} inputs, so this deployment serves its output (decided in {ms} ms)",
            reused.from
        ),
    )
    .await;
    b.say(
        Step::Activate,
        format!(
            "Site settings: spa={} clean_urls={}",
            reused.site.spa, reused.site.clean_urls
        ),
    )
    .await;
    Ok(true)
}
