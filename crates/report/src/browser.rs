//! Opens a rendered report in a real headless Chromium and reports what the browser saw: the laid
//! out size of every figure, every resource the page loaded, every network request it made, and a
//! screenshot for a human to look at.
//!
//! Two runs of the browser: `--dump-dom` (with a NetLog) and `--screenshot`. The page measures
//! itself: [`MEASURE_SCRIPT`], which [`crate::render_html`] embeds, writes JSON into two hidden
//! `<pre>` elements after the load event, and we read them back from the dumped DOM.
//!
//! Chromium 156 (Debian) contacts Google on its own even with every background-networking switch
//! below: an on-demand check of the on-device model component, Gaia's `ListAccounts`, network time.
//! Those requests have no initiator; anything a page asks for carries the page's origin as its
//! initiator (`null` for a `file://` page). So `network_requests` keeps only requests with an
//! initiator, and every request when the NetLog does not say (failing closed).

use crate::{ReportError, Result};
use serde::{Deserialize, Serialize};
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// The hidden element the page writes its figure sizes into.
pub const SIZES_ID: &str = "ragtune-figure-sizes";
/// The hidden element the page writes its loaded resources into.
pub const RESOURCES_ID: &str = "ragtune-resources";

/// Measures each `figure svg` and lists loaded resources, after the load event.
pub const MEASURE_SCRIPT: &str = r#"window.addEventListener('load', function () {
  var sizes = Array.prototype.map.call(document.querySelectorAll('figure.figure'), function (fig) {
    var svg = fig.querySelector('svg');
    var r = svg ? svg.getBoundingClientRect() : { width: 0, height: 0 };
    return { id: fig.getAttribute('data-figure-id') || '', width: r.width, height: r.height };
  });
  document.getElementById('ragtune-figure-sizes').textContent = JSON.stringify(sizes);
  var names = performance.getEntriesByType('resource').map(function (e) { return e.name; });
  document.getElementById('ragtune-resources').textContent = JSON.stringify(names);
});"#;

/// The hidden elements and the script, ready to put at the end of a page's `<body>`.
pub fn probe_html() -> String {
    format!(
        "<pre id=\"{SIZES_ID}\" hidden></pre>\n<pre id=\"{RESOURCES_ID}\" hidden></pre>\n<script>\n{MEASURE_SCRIPT}\n</script>\n"
    )
}

/// What the browser saw.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BrowserCheck {
    /// Every `figure.figure` in document order, with its SVG's rendered size in CSS pixels.
    pub figures: Vec<FigureSize>,
    /// `performance.getEntriesByType('resource')` names: everything the page loaded, local or not.
    pub resources: Vec<String>,
    /// URLs the page requested through the network stack (not `file:`, `data:`, `about:`, ...).
    pub network_requests: Vec<String>,
    pub screenshot: PathBuf,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FigureSize {
    pub id: String,
    pub width: f64,
    pub height: f64,
}

const CANDIDATES: [&str; 4] = [
    "chromium",
    "chromium-browser",
    "google-chrome",
    "google-chrome-stable",
];

/// Each Chromium run gets this long before it is killed.
const TIMEOUT: Duration = Duration::from_secs(60);

/// The first Chromium executable on PATH.
pub fn find_chromium() -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    for name in CANDIDATES {
        for dir in std::env::split_paths(&path) {
            let candidate = dir.join(name);
            if is_executable(&candidate) {
                return Some(candidate);
            }
        }
    }
    None
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path)
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

/// Loads `html` in headless Chromium, reads back the page's own measurements and the NetLog, and
/// saves a 1280px-wide screenshot to `screenshot`.
pub fn check_in_chromium(html: &Path, screenshot: &Path) -> Result<BrowserCheck> {
    let chromium = find_chromium().ok_or(ReportError::ChromiumMissing)?;
    let html = std::fs::canonicalize(html).map_err(|e| ReportError::io(html, e))?;
    let url = file_url(&html);
    let work = TempDir::new()?;

    let net_log = work.path.join("netlog.json");
    let dom_path = work.path.join("dom.html");
    run_chromium(
        &chromium,
        &work.path.join("profile-dom"),
        &[
            format!("--log-net-log={}", net_log.display()),
            "--dump-dom".into(),
            url.clone(),
        ],
        Some(&dom_path),
        &work.path.join("dom.stderr"),
        "dumping the DOM",
    )?;
    let dom = std::fs::read_to_string(&dom_path).map_err(|e| ReportError::io(&dom_path, e))?;
    let figures: Vec<FigureSize> = read_probe(&dom, SIZES_ID)?;
    let resources: Vec<String> = read_probe(&dom, RESOURCES_ID)?;
    let network_requests = page_requests(&net_log)?;

    let screenshot_abs = absolute(screenshot)?;
    if let Some(parent) = screenshot_abs.parent() {
        std::fs::create_dir_all(parent).map_err(|e| ReportError::io(parent, e))?;
    }
    // Chromium would otherwise leave an old screenshot in place when it fails to write a new one.
    let _ = std::fs::remove_file(&screenshot_abs);
    run_chromium(
        &chromium,
        &work.path.join("profile-shot"),
        &[
            format!("--screenshot={}", screenshot_abs.display()),
            "--hide-scrollbars".into(),
            url,
        ],
        None,
        &work.path.join("shot.stderr"),
        "taking the screenshot",
    )?;
    let png = std::fs::read(&screenshot_abs).map_err(|e| {
        ReportError::browser(
            "taking the screenshot",
            format!(
                "Chromium exited cleanly but {} is unreadable: {e}",
                screenshot_abs.display()
            ),
        )
    })?;
    if !png.starts_with(b"\x89PNG\r\n\x1a\n") {
        return Err(ReportError::browser(
            "taking the screenshot",
            format!("{} is not a PNG", screenshot_abs.display()),
        ));
    }
    Ok(BrowserCheck {
        figures,
        resources,
        network_requests,
        screenshot: screenshot_abs,
    })
}

fn absolute(path: &Path) -> Result<PathBuf> {
    if path.is_absolute() {
        Ok(path.to_path_buf())
    } else {
        let cwd = std::env::current_dir().map_err(|e| ReportError::io(Path::new("."), e))?;
        Ok(cwd.join(path))
    }
}

/// Runs Chromium headless with a fresh profile and the switches that keep it quiet, killing it
/// after [`TIMEOUT`]. `stdout` receives what `--dump-dom` prints.
fn run_chromium(
    chromium: &Path,
    profile: &Path,
    args: &[String],
    stdout: Option<&Path>,
    stderr: &Path,
    step: &str,
) -> Result<()> {
    let mut cmd = Command::new(chromium);
    cmd.args([
        "--headless",
        // Containers run as root and often lack the namespaces the sandbox needs; the page is our own file.
        "--no-sandbox",
        "--disable-gpu",
        // Docker's /dev/shm is 64 MB, too small for Chromium's shared memory.
        "--disable-dev-shm-usage",
        "--window-size=1280,2400",
        // Lets timers and the load event finish before the DOM is dumped or the screenshot taken.
        "--virtual-time-budget=3000",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-extensions",
        "--disable-sync",
        "--disable-default-apps",
        "--disable-breakpad",
        "--metrics-recording-only",
        "--no-first-run",
        "--no-default-browser-check",
        "--disable-features=NetworkTimeServiceQuerying,OptimizationHints,Translate,MediaRouter",
    ])
    .arg(format!("--user-data-dir={}", profile.display()))
    .args(args)
    .stdin(Stdio::null());
    let err_file = File::create(stderr).map_err(|e| ReportError::io(stderr, e))?;
    cmd.stderr(err_file);
    match stdout {
        Some(p) => {
            cmd.stdout(File::create(p).map_err(|e| ReportError::io(p, e))?);
        }
        None => {
            cmd.stdout(Stdio::null());
        }
    }
    let mut child = cmd.spawn().map_err(|e| {
        ReportError::browser(step, format!("could not start {}: {e}", chromium.display()))
    })?;
    let start = Instant::now();
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if start.elapsed() > TIMEOUT => {
                // Chromium's helper processes exit on their own once the browser process is gone.
                let _ = child.kill();
                let _ = child.wait();
                return Err(ReportError::browser(
                    step,
                    format!(
                        "{} did not finish within {} s and was killed; its last output:\n{}",
                        chromium.display(),
                        TIMEOUT.as_secs(),
                        tail(stderr)
                    ),
                ));
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(50)),
            Err(e) => {
                return Err(ReportError::browser(
                    step,
                    format!("waiting for Chromium: {e}"),
                ))
            }
        }
    };
    if !status.success() {
        return Err(ReportError::browser(
            step,
            format!(
                "{} exited with {status}; its last output:\n{}",
                chromium.display(),
                tail(stderr)
            ),
        ));
    }
    Ok(())
}

/// The last lines of a log, for error messages.
fn tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(15)..].join("\n")
}

/// Parses the JSON the page wrote into `<pre id="{id}">` in the dumped DOM.
fn read_probe<T: serde::de::DeserializeOwned>(dom: &str, id: &str) -> Result<T> {
    let step = "reading the page's measurements";
    let marker = format!("id=\"{id}\"");
    let at = dom.find(&marker).ok_or_else(|| {
        ReportError::browser(
            step,
            format!("the dumped DOM has no <pre id=\"{id}\">: was the page made by render_html (or does it include browser::probe_html())?"),
        )
    })?;
    let open_end = at
        + dom[at..]
            .find('>')
            .ok_or_else(|| ReportError::browser(step, "truncated DOM"))?
        + 1;
    let close = open_end
        + dom[open_end..].find("</pre>").ok_or_else(|| {
            ReportError::browser(step, format!("<pre id=\"{id}\"> is not closed"))
        })?;
    let text = html_unescape(&dom[open_end..close]);
    if text.trim().is_empty() {
        return Err(ReportError::browser(
            step,
            format!("<pre id=\"{id}\"> is empty: the page's measuring script did not run (a script error, or the load event never fired)"),
        ));
    }
    serde_json::from_str(&text).map_err(|e| {
        ReportError::browser(
            step,
            format!("<pre id=\"{id}\"> holds no valid JSON ({e}): {text}"),
        )
    })
}

/// Undoes the escaping Chromium applies to text when it serializes the DOM.
fn html_unescape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find('&') {
        out.push_str(&rest[..i]);
        rest = &rest[i..];
        let end = rest.find(';').filter(|&e| e <= 10);
        let decoded = end.and_then(|e| {
            let entity = &rest[1..e];
            let c = match entity {
                "amp" => Some('&'),
                "lt" => Some('<'),
                "gt" => Some('>'),
                "quot" => Some('"'),
                "apos" => Some('\''),
                "nbsp" => Some('\u{a0}'),
                _ => entity
                    .strip_prefix("#x")
                    .or_else(|| entity.strip_prefix("#X"))
                    .and_then(|h| u32::from_str_radix(h, 16).ok())
                    .or_else(|| entity.strip_prefix('#').and_then(|d| d.parse().ok()))
                    .and_then(char::from_u32),
            };
            c.map(|c| (c, e))
        });
        match decoded {
            Some((c, e)) => {
                out.push(c);
                rest = &rest[e + 1..];
            }
            None => {
                out.push('&');
                rest = &rest[1..];
            }
        }
    }
    out.push_str(rest);
    out
}

/// Schemes that never leave the machine.
const LOCAL_SCHEMES: [&str; 10] = [
    "file",
    "data",
    "about",
    "blob",
    "javascript",
    "chrome",
    "chrome-extension",
    "chrome-untrusted",
    "chrome-search",
    "devtools",
];

/// Non-local URLs the page requested, in order, each once, from a Chromium NetLog.
fn page_requests(net_log: &Path) -> Result<Vec<String>> {
    let step = "reading the NetLog";
    let text = std::fs::read_to_string(net_log).map_err(|e| {
        ReportError::browser(
            step,
            format!("Chromium wrote no NetLog at {}: {e}", net_log.display()),
        )
    })?;
    let log: serde_json::Value = match serde_json::from_str(&text) {
        Ok(v) => v,
        // A browser that died mid-run leaves the events array open; close it and try again.
        Err(_) => serde_json::from_str(&format!("{}]}}", text.trim_end().trim_end_matches(',')))
            .map_err(|e| {
                ReportError::browser(
                    step,
                    format!("{} is not NetLog JSON: {e}", net_log.display()),
                )
            })?,
    };
    let start_job = log
        .pointer("/constants/logEventTypes/URL_REQUEST_START_JOB")
        .and_then(|v| v.as_u64());
    let events = log
        .get("events")
        .and_then(|e| e.as_array())
        .ok_or_else(|| {
            ReportError::browser(step, format!("{} has no events", net_log.display()))
        })?;
    let mut urls: Vec<String> = Vec::new();
    for event in events {
        let Some(params) = event.get("params") else {
            continue;
        };
        let Some(url) = params.get("url").and_then(|u| u.as_str()) else {
            continue;
        };
        if let Some(start_job) = start_job {
            if event.get("type").and_then(|t| t.as_u64()) != Some(start_job) {
                continue;
            }
            // The browser's own requests carry no initiator; the NetLog writes that as "not an origin".
            if params.get("initiator").and_then(|i| i.as_str()) == Some("not an origin") {
                continue;
            }
        }
        let scheme = url.split(':').next().unwrap_or("").to_ascii_lowercase();
        if LOCAL_SCHEMES.contains(&scheme.as_str()) {
            continue;
        }
        if !urls.iter().any(|u| u == url) {
            urls.push(url.to_string());
        }
    }
    Ok(urls)
}

/// `file://` URL of an absolute path, percent-encoding everything but unreserved characters and `/`.
fn file_url(path: &Path) -> String {
    use std::os::unix::ffi::OsStrExt;
    let mut url = String::from("file://");
    for &b in path.as_os_str().as_bytes() {
        if b.is_ascii_alphanumeric() || b"/-._~".contains(&b) {
            url.push(b as char);
        } else {
            url.push_str(&format!("%{b:02X}"));
        }
    }
    url
}

static COUNTER: AtomicU64 = AtomicU64::new(0);

/// A fresh folder for one check (profiles, NetLog, dumped DOM), removed when dropped.
struct TempDir {
    path: PathBuf,
}

impl TempDir {
    fn new() -> Result<Self> {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let path = std::env::temp_dir().join(format!(
            "ragtune-chromium-{}-{}-{nanos}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir(&path).map_err(|e| ReportError::io(&path, e))?;
        Ok(TempDir { path })
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unescapes_what_chromium_escapes() {
        assert_eq!(
            html_unescape("[\"a &amp; b\",\"&lt;x&gt;\"] &#39;&#x41;&nbsp;"),
            "[\"a & b\",\"<x>\"] 'A\u{a0}"
        );
        assert_eq!(html_unescape("a & b"), "a & b");
    }

    #[test]
    fn reads_a_probe_from_a_dumped_dom() {
        let dom = r#"<body><pre id="ragtune-figure-sizes" hidden="">[{"id":"a&amp;b","width":720,"height":388}]</pre></body>"#;
        let sizes: Vec<FigureSize> = read_probe(dom, SIZES_ID).unwrap();
        assert_eq!(
            sizes,
            vec![FigureSize {
                id: "a&b".into(),
                width: 720.0,
                height: 388.0
            }]
        );
        let empty = r#"<pre id="ragtune-resources" hidden=""></pre>"#;
        let err = read_probe::<Vec<String>>(empty, RESOURCES_ID)
            .unwrap_err()
            .to_string();
        assert!(err.contains("did not run"), "{err}");
    }

    #[test]
    fn file_urls_are_percent_encoded() {
        assert_eq!(
            file_url(Path::new("/tmp/a b/r#1.html")),
            "file:///tmp/a%20b/r%231.html"
        );
    }

    #[test]
    fn netlog_keeps_page_requests_only() {
        let dir = TempDir::new().unwrap();
        let path = dir.path.join("n.json");
        std::fs::write(
            &path,
            r#"{"constants":{"logEventTypes":{"URL_REQUEST_START_JOB":7,"REQUEST_ALIVE":3}},"events":[
              {"type":7,"params":{"url":"https://accounts.google.com/ListAccounts","initiator":"not an origin"}},
              {"type":3,"params":{"url":"http://127.0.0.1:9/x.png"}},
              {"type":7,"params":{"url":"http://127.0.0.1:9/x.png","initiator":"null"}},
              {"type":7,"params":{"url":"http://127.0.0.1:9/x.png","initiator":"null"}},
              {"type":7,"params":{"url":"data:,","initiator":"null"}},"#,
        )
        .unwrap();
        assert_eq!(
            page_requests(&path).unwrap(),
            vec!["http://127.0.0.1:9/x.png".to_string()]
        );
    }
}
