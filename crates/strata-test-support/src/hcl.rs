//! Reading generated Terraform with a real HCL parser (python-hcl2, which `scripts/test`
//! installs from PyPI).

use std::path::Path;
use std::process::Command;

use serde_json::Value;

/// Parses HCL with python-hcl2 and returns it as JSON, with the quotes python-hcl2 keeps
/// around labels and string values removed and its bookkeeping keys dropped.
pub fn parse_hcl_file(path: &Path) -> Value {
    const PY: &str = r#"
import json, sys
import hcl2

def clean(v):
    if isinstance(v, dict):
        return {clean_str(k): clean(x) for k, x in v.items() if not k.startswith("__")}
    if isinstance(v, list):
        return [clean(x) for x in v]
    if isinstance(v, str):
        return clean_str(v)
    return v

def clean_str(s):
    if len(s) >= 2 and s[0] == '"' and s[-1] == '"':
        return s[1:-1]
    return s

with open(sys.argv[1]) as f:
    print(json.dumps(clean(hcl2.load(f))))
"#;
    let out = Command::new("python3")
        .arg("-c")
        .arg(PY)
        .arg(path)
        .output()
        .expect("run python3");
    assert!(
        out.status.success(),
        "python-hcl2 could not parse {} (scripts/test installs python-hcl2):\n{}",
        path.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// The body of block `kind "label" ...` in parsed HCL (`resource`, `coder_agent`, `main`).
pub fn hcl_block<'a>(hcl: &'a Value, kind: &str, labels: &[&str]) -> &'a Value {
    let mut found = hcl[kind]
        .as_array()
        .unwrap_or_else(|| panic!("no {kind} blocks"))
        .iter()
        .find(|b| b.get(labels[0]).is_some())
        .unwrap_or_else(|| panic!("no {kind} {labels:?}"));
    for l in labels {
        found = &found[*l];
    }
    found
}

/// The text of an indented heredoc (`<<-EOT ... EOT`) as python-hcl2 returns it: markers
/// removed and the common indentation stripped, as Terraform does.
pub fn heredoc_text(raw: &str) -> String {
    let body = raw
        .split_once('\n')
        .map(|(first, rest)| {
            assert!(first.starts_with("<<"), "not a heredoc: {raw}");
            rest
        })
        .unwrap_or(raw);
    let lines: Vec<&str> = body.lines().collect();
    let lines = &lines[..lines.len().saturating_sub(1)]; // the closing marker
    let indent = lines
        .iter()
        .filter(|l| !l.trim().is_empty())
        .map(|l| l.len() - l.trim_start().len())
        .min()
        .unwrap_or(0);
    let mut out = String::new();
    for l in lines {
        out.push_str(l.get(indent..).unwrap_or(""));
        out.push('\n');
    }
    out
}
