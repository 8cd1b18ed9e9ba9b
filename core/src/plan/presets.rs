//! The framework presets: how each framework we know builds a static site, and where it
//! writes it. One table serves the builder, `cdeploy init` and `cdeploy deploy --dry`.

/// What a framework needs to be deployed as a static site.
#[derive(Debug)]
pub struct Preset {
    /// Stable id, used in `--json`.
    pub id: &'static str,
    pub name: &'static str,
    /// Detected when package.json depends on one of these…
    pub(super) deps: &'static [&'static str],
    /// …or when one of these files exists.
    pub(super) files: &'static [&'static str],
    /// The script to run when package.json has it (`build`; Nuxt prefers `generate`).
    pub(super) scripts: &'static [&'static str],
    /// What to run through the package manager when there is no such script.
    pub(super) exec: &'static str,
    /// The static output, relative to the project (Angular's is read from angular.json).
    pub output: &'static str,
    /// Whether unknown paths serve `index.html` (`None`: decided from the output).
    pub spa: Option<bool>,
}

/// Every framework we know, most specific first (a SvelteKit app also depends on vite).
pub const PRESETS: &[Preset] = &[
    Preset {
        id: "nextjs",
        name: "Next.js",
        deps: &["next"],
        files: &["next.config.js", "next.config.mjs", "next.config.ts"],
        scripts: &["build"],
        exec: "next build",
        output: "out",
        spa: Some(false),
    },
    Preset {
        id: "nuxt",
        name: "Nuxt (nuxt generate)",
        deps: &["nuxt", "nuxt3"],
        files: &["nuxt.config.ts", "nuxt.config.js"],
        scripts: &["generate"],
        exec: "nuxt generate",
        output: ".output/public",
        spa: None,
    },
    Preset {
        id: "sveltekit",
        name: "SvelteKit (adapter-static)",
        deps: &["@sveltejs/kit"],
        files: &[],
        scripts: &["build"],
        exec: "vite build",
        output: "build",
        spa: None,
    },
    Preset {
        id: "astro",
        name: "Astro",
        deps: &["astro"],
        files: &["astro.config.mjs", "astro.config.ts", "astro.config.js"],
        scripts: &["build"],
        exec: "astro build",
        output: "dist",
        spa: Some(false),
    },
    Preset {
        id: "angular",
        name: "Angular",
        deps: &["@angular/core"],
        files: &["angular.json"],
        scripts: &["build"],
        exec: "ng build",
        output: "dist",
        spa: Some(true),
    },
    Preset {
        id: "docusaurus",
        name: "Docusaurus",
        deps: &["@docusaurus/core"],
        files: &["docusaurus.config.js", "docusaurus.config.ts"],
        scripts: &["build"],
        exec: "docusaurus build",
        output: "build",
        spa: Some(false),
    },
    Preset {
        id: "eleventy",
        name: "Eleventy",
        deps: &["@11ty/eleventy"],
        files: &[
            ".eleventy.js",
            "eleventy.config.js",
            "eleventy.config.mjs",
            "eleventy.config.cjs",
        ],
        scripts: &["build"],
        exec: "eleventy",
        output: "_site",
        spa: Some(false),
    },
    Preset {
        id: "gatsby",
        name: "Gatsby",
        deps: &["gatsby"],
        files: &["gatsby-config.js", "gatsby-config.ts"],
        scripts: &["build"],
        exec: "gatsby build",
        output: "public",
        spa: Some(false),
    },
    Preset {
        id: "react-router",
        name: "React Router (SPA mode)",
        deps: &["@react-router/dev"],
        files: &["react-router.config.ts", "react-router.config.js"],
        scripts: &["build"],
        exec: "react-router build",
        output: "build/client",
        spa: Some(true),
    },
    Preset {
        id: "remix",
        name: "Remix (SPA mode)",
        deps: &["@remix-run/dev"],
        files: &[],
        scripts: &["build"],
        exec: "remix vite:build",
        output: "build/client",
        spa: Some(true),
    },
    Preset {
        id: "vue-cli",
        name: "Vue CLI",
        deps: &["@vue/cli-service"],
        files: &[],
        scripts: &["build"],
        exec: "vue-cli-service build",
        output: "dist",
        spa: Some(true),
    },
    Preset {
        id: "create-react-app",
        name: "Create React App",
        deps: &["react-scripts"],
        files: &[],
        scripts: &["build"],
        exec: "react-scripts build",
        output: "build",
        spa: Some(true),
    },
    Preset {
        id: "vite",
        name: "Vite",
        deps: &["vite"],
        files: &["vite.config.js", "vite.config.ts", "vite.config.mjs"],
        scripts: &["build"],
        exec: "vite build",
        output: "dist",
        spa: Some(true),
    },
];

/// Looks a preset up by id.
pub fn preset(id: &str) -> Option<&'static Preset> {
    PRESETS.iter().find(|p| p.id == id)
}
