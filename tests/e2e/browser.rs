//! Headless Chromium as the judge of a rendered HTML report: the DOM it
//! builds, what it says on its console, and a screenshot for a human.
//! Chromium is required (`apt-get install chromium`); a test that needs it
//! fails without it rather than skip.

use std::io::Read;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// The browser binary; `CHROMIUM` overrides.
fn chromium() -> String {
    std::env::var("CHROMIUM").unwrap_or_else(|_| "chromium".into())
}

const LIMIT: Duration = Duration::from_secs(120);

/// What Chromium made of a page.
#[derive(Debug)]
pub struct BrowserCheck {
    /// The DOM after loading, as Chromium serialises it (`--dump-dom`).
    pub dom: String,
    /// Console messages and uncaught errors. A report has no script, so any
    /// console message at all is a fault.
    pub console_errors: Vec<String>,
    /// Whether the screenshot exists and is a PNG.
    pub screenshot_written: bool,
}

/// Loads `path` in headless Chromium twice: once dumping the DOM, once
/// writing a 1280 px wide screenshot to `screenshot`.
pub fn check_report_html(path: &Path, screenshot: &Path) -> BrowserCheck {
    let path = path.canonicalize().expect("the HTML file exists");
    let url = file_url(&path);
    let common = [
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--allow-file-access-from-files",
        "--virtual-time-budget=2000",
        "--enable-logging=stderr",
        "--v=0",
        "--no-first-run",
        "--no-default-browser-check",
    ];

    let dump = run(&common, &["--dump-dom".to_string(), url.clone()]);
    assert!(
        dump.status.success(),
        "chromium --dump-dom failed ({}): {}",
        dump.status,
        String::from_utf8_lossy(&dump.stderr)
    );
    let dom = String::from_utf8_lossy(&dump.stdout).into_owned();
    let mut console_errors = console_lines(&String::from_utf8_lossy(&dump.stderr));

    let _ = std::fs::remove_file(screenshot);
    let shot = run(
        &common,
        &[
            format!("--screenshot={}", screenshot.display()),
            "--window-size=1280,4000".to_string(),
            "--hide-scrollbars".to_string(),
            url,
        ],
    );
    for line in console_lines(&String::from_utf8_lossy(&shot.stderr)) {
        if !console_errors.contains(&line) {
            console_errors.push(line);
        }
    }
    let screenshot_written = shot.status.success()
        && std::fs::read(screenshot)
            .map(|bytes| bytes.starts_with(b"\x89PNG\r\n\x1a\n"))
            .unwrap_or(false);
    BrowserCheck {
        dom,
        console_errors,
        screenshot_written,
    }
}

/// `file://` URL of an absolute path (the few characters a URL reserves
/// escaped).
fn file_url(path: &Path) -> String {
    let mut url = String::from("file://");
    for c in path.to_str().expect("utf-8 path").chars() {
        match c {
            ' ' => url.push_str("%20"),
            '#' => url.push_str("%23"),
            '%' => url.push_str("%25"),
            '?' => url.push_str("%3F"),
            c => url.push(c),
        }
    }
    url
}

/// Chromium's console lines (`…:CONSOLE(1)] "message", source: …`) and
/// uncaught errors.
fn console_lines(stderr: &str) -> Vec<String> {
    stderr
        .lines()
        .filter(|l| l.contains(":CONSOLE") || l.contains("Uncaught"))
        .map(str::to_string)
        .collect()
}

/// Runs Chromium with a throwaway profile, killed after `LIMIT`.
fn run(common: &[&str], args: &[String]) -> Output {
    let profile = tempfile::tempdir().expect("profile dir");
    let mut child = match Command::new(chromium())
        .args(common)
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
    {
        Ok(child) => child,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => panic!(
            "`{}` not found: headless Chromium checks the HTML report; install it with \
             `apt-get install chromium` (CI installs it), or point CHROMIUM at a binary",
            chromium()
        ),
        Err(e) => panic!("cannot start {}: {e}", chromium()),
    };
    // Drain both pipes on threads so a chatty browser cannot block on them.
    let mut stdout = child.stdout.take().expect("stdout piped");
    let mut stderr = child.stderr.take().expect("stderr piped");
    let out = std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = stdout.read_to_end(&mut buf);
        buf
    });
    let err = std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = stderr.read_to_end(&mut buf);
        buf
    });
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for chromium") {
            break status;
        }
        if started.elapsed() > LIMIT {
            let _ = child.kill();
            let _ = child.wait();
            panic!("chromium did not finish within {LIMIT:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    Output {
        status,
        stdout: out.join().unwrap_or_default(),
        stderr: err.join().unwrap_or_default(),
    }
}
