//! Choosing a wheel among a distribution's files, and installing one into a virtual
//! environment's directory layout (the way pip and uv do, without byte-compiling).

use std::fs;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use strata_fetch::extract::{ArchiveKind, extract};

use crate::PythonError;

/// How well a wheel's tags fit: higher is better. The resolver lists only wheels compatible
/// with the target, so this only ranks them: platform-specific over `any`, then an ABI of
/// this interpreter over `abi3` over `none`.
pub fn score(filename: &str, python: &str) -> Option<(u8, u8)> {
    let stem = filename.strip_suffix(".whl")?;
    let parts: Vec<&str> = stem.split('-').collect();
    if parts.len() < 5 {
        return None;
    }
    let (abi, plat) = (parts[parts.len() - 2], parts[parts.len() - 1]);
    let cp = format!("cp{}", python.replace('.', ""));
    let abi_score = abi
        .split('.')
        .map(|a| {
            if a == cp {
                3
            } else if a == "abi3" {
                2
            } else {
                1
            }
        })
        .max()
        .unwrap_or(0);
    let plat_score = u8::from(plat != "any");
    Some((plat_score, abi_score))
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> PythonError + '_ {
    move |source| PythonError::Io {
        path: path.to_owned(),
        source,
    }
}

/// Moves the contents of `src` into `dst`, merging directories.
fn merge(src: &Path, dst: &Path) -> Result<(), PythonError> {
    fs::create_dir_all(dst).map_err(io(dst))?;
    for entry in fs::read_dir(src).map_err(io(src))? {
        let entry = entry.map_err(io(src))?;
        let from = entry.path();
        let to = dst.join(entry.file_name());
        let is_dir = entry.file_type().map_err(io(&from))?.is_dir();
        if is_dir && to.is_dir() {
            merge(&from, &to)?;
        } else if fs::symlink_metadata(&to).is_ok() {
            return Err(PythonError::Wheel {
                wheel: src.display().to_string(),
                message: format!("two files of the wheel install to {}", to.display()),
            });
        } else {
            fs::rename(&from, &to).map_err(io(&from))?;
        }
    }
    Ok(())
}

/// Installs the wheel file `wheel` (named `filename`) into `root`, the host directory standing
/// for the virtual environment at image path `venv` for Python `python` (`3.11`).
pub fn install(
    wheel: &Path,
    filename: &str,
    root: &Path,
    venv: &str,
    python: &str,
) -> Result<(), PythonError> {
    let bad = |message: String| PythonError::Wheel {
        wheel: filename.to_owned(),
        message,
    };
    let unpacked = root.join(".unpack");
    fs::create_dir_all(&unpacked).map_err(io(&unpacked))?;
    let f = fs::File::open(wheel).map_err(io(wheel))?;
    extract(f, ArchiveKind::Zip, 0, &unpacked).map_err(|e| bad(e.to_string()))?;
    let site = root.join(format!("lib/python{python}/site-packages"));
    let bin = root.join("bin");
    fs::create_dir_all(&site).map_err(io(&site))?;
    fs::create_dir_all(&bin).map_err(io(&bin))?;
    let mut entry_points = None;
    let mut tops: Vec<_> = fs::read_dir(&unpacked)
        .map_err(io(&unpacked))?
        .filter_map(Result::ok)
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    tops.sort();
    for top in tops {
        let from = unpacked.join(&top);
        if top.ends_with(".data") && from.is_dir() {
            for (sub, to) in [
                ("purelib", site.clone()),
                ("platlib", site.clone()),
                ("data", root.to_owned()),
                ("headers", root.join(format!("include/site/python{python}"))),
            ] {
                let s = from.join(sub);
                if s.is_dir() {
                    merge(&s, &to)?;
                }
            }
            let scripts = from.join("scripts");
            if scripts.is_dir() {
                for e in fs::read_dir(&scripts).map_err(io(&scripts))? {
                    let e = e.map_err(io(&scripts))?;
                    let p = e.path();
                    let bytes = fs::read(&p).map_err(io(&p))?;
                    // `#!python` marks a script whose interpreter the installer fills in.
                    let bytes = match bytes.strip_prefix(b"#!python") {
                        Some(rest) => [format!("#!{venv}/bin/python3").as_bytes(), rest].concat(),
                        None => bytes,
                    };
                    let to = bin.join(e.file_name());
                    fs::write(&to, bytes).map_err(io(&to))?;
                    fs::set_permissions(&to, fs::Permissions::from_mode(0o755)).map_err(io(&to))?;
                }
            }
            continue;
        }
        if top.ends_with(".dist-info") {
            let ep = from.join("entry_points.txt");
            if ep.is_file() {
                entry_points = Some(fs::read_to_string(&ep).map_err(io(&ep))?);
            }
            let installer = from.join("INSTALLER");
            let _ = fs::remove_file(&installer);
            fs::write(&installer, "strata\n").map_err(io(&installer))?;
        }
        let to = site.join(&top);
        if from.is_dir() && to.is_dir() {
            merge(&from, &to)?;
        } else {
            fs::rename(&from, &to).map_err(io(&from))?;
        }
    }
    fs::remove_dir_all(&unpacked).map_err(io(&unpacked))?;
    if let Some(text) = entry_points {
        for (name, module, attr) in console_scripts(&text) {
            let head = attr.split('.').next().unwrap_or(&attr);
            let script = format!(
                "#!{venv}/bin/python3\n# -*- coding: utf-8 -*-\nimport sys\nfrom {module} import {head}\nif __name__ == \"__main__\":\n    sys.argv[0] = sys.argv[0].removesuffix(\".exe\")\n    sys.exit({attr}())\n"
            );
            let to = bin.join(&name);
            let mut f = fs::File::create(&to).map_err(io(&to))?;
            f.write_all(script.as_bytes()).map_err(io(&to))?;
            fs::set_permissions(&to, fs::Permissions::from_mode(0o755)).map_err(io(&to))?;
        }
    }
    Ok(())
}

/// The `[console_scripts]` and `[gui_scripts]` of an `entry_points.txt`: (name, module,
/// attribute).
pub fn console_scripts(text: &str) -> Vec<(String, String, String)> {
    let mut out = Vec::new();
    let mut section = "";
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if let Some(s) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            section = s.trim();
            continue;
        }
        if section != "console_scripts" && section != "gui_scripts" {
            continue;
        }
        let Some((name, value)) = line.split_once('=') else {
            continue;
        };
        // Extras (`module:attr [extra]`) do not change the script.
        let value = value.split('[').next().unwrap_or(value).trim();
        let Some((module, attr)) = value.split_once(':') else {
            continue;
        };
        let (name, module, attr) = (name.trim(), module.trim(), attr.trim());
        let ident = |s: &str| {
            !s.is_empty()
                && s.split('.')
                    .all(|p| !p.is_empty() && p.chars().all(|c| c.is_alphanumeric() || c == '_'))
        };
        let safe_name = !name.is_empty()
            && !name.contains('/')
            && name != "."
            && name != ".."
            && name.chars().all(|c| !c.is_control());
        if safe_name && ident(module) && ident(attr) {
            out.push((name.to_owned(), module.to_owned(), attr.to_owned()));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wheels_rank_by_abi_and_platform() {
        let py = "3.11";
        let a = score("c-1-cp311-cp311-manylinux_2_17_x86_64.whl", py);
        let b = score("c-1-cp37-abi3-manylinux_2_17_x86_64.whl", py);
        let c = score("c-1-py3-none-any.whl", py);
        assert!(a > b && b > c, "{a:?} {b:?} {c:?}");
        assert_eq!(score("not-a-wheel.tar.gz", py), None);
    }

    #[test]
    fn entry_points_become_scripts_and_bad_ones_are_skipped() {
        let text = "[console_scripts]\npygmentize = pygments.cmdline:main\nx = m:a.b [extra]\n../evil = m:f\nbad = m;rm:f\n[other]\ny = m:f\n";
        assert_eq!(
            console_scripts(text),
            vec![
                (
                    "pygmentize".into(),
                    "pygments.cmdline".into(),
                    "main".into()
                ),
                ("x".into(), "m".into(), "a.b".into()),
            ]
        );
    }
}
