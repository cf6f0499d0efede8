//! Installing a wheel made by the test: site-packages, `.data` directories, console scripts,
//! and an unsafe wheel refused.

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use strata_python::wheel::install;

fn wheel(path: &Path, files: &[(&str, &[u8])]) {
    let mut w = zip::ZipWriter::new(std::fs::File::create(path).expect("create"));
    for (name, data) in files {
        let opts = zip::write::SimpleFileOptions::default().unix_permissions(0o644);
        w.start_file(*name, opts).expect("start");
        w.write_all(data).expect("write");
    }
    w.finish().expect("finish");
}

#[test]
fn a_wheel_installs_into_the_venv_layout_with_scripts() {
    let dir = tempfile::tempdir().expect("tempdir");
    let whl = dir.path().join("demo-1.0-py3-none-any.whl");
    wheel(
        &whl,
        &[
            ("demo/__init__.py", b"def main():\n    return 0\n"),
            ("demo-1.0.dist-info/METADATA", b"Name: demo\nVersion: 1.0\n"),
            (
                "demo-1.0.dist-info/entry_points.txt",
                b"[console_scripts]\ndemo = demo:main\n",
            ),
            ("demo-1.0.dist-info/RECORD", b""),
            ("demo-1.0.data/scripts/demo-sh", b"#!python\nprint('x')\n"),
            ("demo-1.0.data/purelib/demo_extra.py", b"X = 1\n"),
            ("demo-1.0.data/data/share/demo/readme", b"hi\n"),
        ],
    );
    let root = dir.path().join("root");
    std::fs::create_dir_all(&root).expect("root");
    install(
        &whl,
        "demo-1.0-py3-none-any.whl",
        &root,
        "/opt/venv",
        "3.11",
    )
    .expect("install");
    let site = root.join("lib/python3.11/site-packages");
    assert!(site.join("demo/__init__.py").is_file());
    assert!(
        site.join("demo_extra.py").is_file(),
        ".data/purelib goes to site-packages"
    );
    assert!(
        root.join("share/demo/readme").is_file(),
        ".data/data goes to the venv root"
    );
    assert_eq!(
        std::fs::read_to_string(site.join("demo-1.0.dist-info/INSTALLER")).expect("INSTALLER"),
        "strata\n"
    );
    let script = std::fs::read_to_string(root.join("bin/demo")).expect("console script");
    assert!(script.starts_with("#!/opt/venv/bin/python3\n"), "{script}");
    assert!(script.contains("from demo import main") && script.contains("sys.exit(main())"));
    let mode = std::fs::metadata(root.join("bin/demo"))
        .expect("meta")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o755);
    let sh = std::fs::read_to_string(root.join("bin/demo-sh")).expect("data script");
    assert_eq!(
        sh, "#!/opt/venv/bin/python3\nprint('x')\n",
        "#!python is filled in"
    );
    assert!(!root.join(".unpack").exists(), "no scratch left behind");
}

#[test]
fn a_wheel_escaping_the_venv_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let whl = dir.path().join("evil-1.0-py3-none-any.whl");
    wheel(&whl, &[("../../evil.py", b"x")]);
    let root = dir.path().join("root");
    std::fs::create_dir_all(&root).expect("root");
    let err = install(
        &whl,
        "evil-1.0-py3-none-any.whl",
        &root,
        "/opt/venv",
        "3.11",
    )
    .expect_err("refused");
    assert!(err.to_string().contains("climbs out"), "{err}");
    assert!(!dir.path().join("evil.py").exists());
}
