//! Headless Chromium, when installed: renders an HTML page to a PNG (used by `plot --out
//! FILE.png` and by the tests that check the HTML reports render).

use anyhow::{Context, Result, bail};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The Chromium binary: `$GADMS_CHROMIUM`, else the first of `chromium`, `chromium-browser`,
/// `google-chrome` on `PATH`; `None` when there is none.
pub fn find_chromium() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("GADMS_CHROMIUM").map(PathBuf::from) {
        return p.is_file().then_some(p);
    }
    let path = std::env::var_os("PATH")?;
    for name in ["chromium", "chromium-browser", "google-chrome"] {
        for dir in std::env::split_paths(&path) {
            let p = dir.join(name);
            if p.is_file() {
                return Some(p);
            }
        }
    }
    None
}

/// Renders `html` at `size` (width, height) CSS pixels with headless Chromium into the PNG
/// `out` (written to a temporary sibling, then renamed). Fails after 90 s.
pub fn screenshot(chrome: &Path, html: &str, out: &Path, size: (u32, u32)) -> Result<()> {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let tmp = std::env::temp_dir().join(format!("gadms-shot-{}-{nanos}", std::process::id()));
    std::fs::create_dir_all(&tmp).with_context(|| format!("{}", tmp.display()))?;
    let page = tmp.join("page.html");
    std::fs::write(&page, html).with_context(|| format!("{}", page.display()))?;
    let mut partial = out.as_os_str().to_owned();
    partial.push(".tmp.png");
    let partial = PathBuf::from(partial);
    let mut child = Command::new(chrome)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--hide-scrollbars",
            "--allow-file-access-from-files",
        ])
        .arg(format!("--user-data-dir={}", tmp.join("profile").display()))
        .arg(format!("--window-size={},{}", size.0, size.1))
        .arg(format!("--screenshot={}", partial.display()))
        .arg(format!("file://{}", page.display()))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .with_context(|| format!("cannot start {}", chrome.display()))?;
    let t0 = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait()? {
            break Some(s);
        }
        if t0.elapsed() > Duration::from_secs(90) {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let _ = std::fs::remove_dir_all(&tmp);
    match status {
        None => bail!("{}: Chromium did not finish within 90 s", out.display()),
        Some(s) if !s.success() || !partial.is_file() => {
            let _ = std::fs::remove_file(&partial);
            bail!(
                "{}: Chromium failed to render the page ({s})",
                out.display()
            )
        }
        Some(_) => std::fs::rename(&partial, out).with_context(|| format!("{}", out.display())),
    }
}
