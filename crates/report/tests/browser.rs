//! The rendered report in a real headless Chromium: every figure gets a size, nothing is loaded,
//! nothing touches the network, and a screenshot comes out. CI runs `cargo xtask setup` first, which
//! installs Chromium, so a missing browser fails these tests rather than skipping them.
//!
//! Set `RAGTUNE_REPORT_KEEP=<dir>` to keep the sample report and its screenshot for a look.

mod common;

use ragtune_report::browser::{check_in_chromium, find_chromium, probe_html};
use ragtune_report::*;
use std::path::PathBuf;

const MISSING: &str =
    "Chromium not found on PATH: install Debian's `chromium` package (`cargo xtask setup` does)";

fn require_chromium() {
    assert!(find_chromium().is_some(), "{MISSING}");
}

fn out_dir(temp: &tempfile::TempDir, name: &str) -> PathBuf {
    match std::env::var_os("RAGTUNE_REPORT_KEEP") {
        Some(dir) => PathBuf::from(dir).join(name),
        None => temp.path().join(name),
    }
}

#[test]
fn sample_report_renders_offline_with_sized_figures() {
    require_chromium();
    let temp = tempfile::tempdir().unwrap();
    let dir = out_dir(&temp, "sample");
    let report = common::sample();
    write_report(&report, &dir).unwrap();
    let check = check_in_chromium(&dir.join("report.html"), &dir.join("screenshot.png"))
        .unwrap_or_else(|e| panic!("{e}"));

    let ids: Vec<&str> = check.figures.iter().map(|f| f.id.as_str()).collect();
    assert_eq!(ids, ["loss", "lr", "ndcg"], "{check:?}");
    for f in &check.figures {
        assert!(
            f.width > 0.0 && f.height > 0.0,
            "figure {} has no size: {check:?}",
            f.id
        );
        // The SVGs are 860px wide, as wide as the page's column in a 1280px window.
        assert!(
            (f.width - 860.0).abs() < 1.0,
            "figure {} is {}px wide",
            f.id,
            f.width
        );
    }
    assert!(
        check.resources.is_empty(),
        "the page loaded resources: {:?}",
        check.resources
    );
    assert!(
        check.network_requests.is_empty(),
        "the page made network requests: {:?}",
        check.network_requests
    );
    let png = std::fs::read(&check.screenshot).unwrap();
    assert!(png.starts_with(b"\x89PNG\r\n\x1a\n"), "not a PNG");
    assert!(
        png.len() > 20_000,
        "a {} byte screenshot is suspiciously small for a page with three charts",
        png.len()
    );
}

/// The check must see what it is meant to catch: a remote image and a figure that is not laid out.
#[test]
fn check_detects_remote_loads_and_hidden_figures() {
    require_chromium();
    let temp = tempfile::tempdir().unwrap();
    let dir = out_dir(&temp, "negative");
    std::fs::create_dir_all(&dir).unwrap();
    // 127.0.0.1:9 is the discard port on loopback: nothing listens, so the request fails at once.
    let page = format!(
        "<!DOCTYPE html><html><head><meta charset=\"utf-8\"><title>bad</title></head><body>\n\
         <img src=\"http://127.0.0.1:9/x.png\" alt=\"remote\">\n\
         <figure class=\"figure\" data-figure-id=\"shown\"><svg width=\"200\" height=\"100\" viewBox=\"0 0 200 100\"></svg></figure>\n\
         <figure class=\"figure\" data-figure-id=\"hidden\" style=\"display:none\"><svg width=\"0\" height=\"100\"></svg></figure>\n\
         {}</body></html>",
        probe_html()
    );
    let html = dir.join("bad.html");
    std::fs::write(&html, page).unwrap();
    let check = check_in_chromium(&html, &dir.join("bad.png")).unwrap_or_else(|e| panic!("{e}"));

    let remote = "http://127.0.0.1:9/x.png";
    assert!(
        check.network_requests.iter().any(|u| u == remote)
            || check.resources.iter().any(|u| u == remote),
        "the remote image went unnoticed: {check:?}"
    );
    // Chromium does both today; each on its own would be enough to fail a report.
    assert_eq!(check.network_requests, [remote], "{check:?}");
    assert_eq!(check.resources, [remote], "{check:?}");
    let size = |id: &str| {
        check
            .figures
            .iter()
            .find(|f| f.id == id)
            .unwrap_or_else(|| panic!("no figure {id}: {check:?}"))
    };
    assert_eq!((size("shown").width, size("shown").height), (200.0, 100.0));
    assert_eq!(size("hidden").width, 0.0, "{check:?}");
}

#[test]
fn a_page_without_the_probe_is_an_error_that_says_so() {
    require_chromium();
    let temp = tempfile::tempdir().unwrap();
    let html = temp.path().join("plain.html");
    std::fs::write(&html, "<!DOCTYPE html><title>x</title><p>no probe</p>").unwrap();
    let err = check_in_chromium(&html, &temp.path().join("x.png"))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("ragtune-figure-sizes") && err.contains("probe_html"),
        "{err}"
    );
}

#[test]
fn missing_chromium_error_names_the_fix() {
    assert_eq!(ReportError::ChromiumMissing.to_string(), MISSING);
}
