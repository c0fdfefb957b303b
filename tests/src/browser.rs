//! A real browser for the web tier's tests: Debian's Chromium, headless, driven through
//! chromedriver (WebDriver, W3C) by `fantoccini`, both on loopback; axe-core (pinned in
//! `tests/browser/package.json`) injected into pages to check WCAG 2.1 A/AA rules.

use std::{
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::Duration,
};

use fantoccini::{Client, ClientBuilder, Locator, key::Key};
use hyper_util::client::legacy::connect::HttpConnector;
use serde_json::{Value, json};

/// Where Debian's packages put the browser and its driver.
pub const CHROMIUM: &str = "/usr/bin/chromium";
pub const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

/// axe-core's script, installed by `npm ci` in `tests/browser`.
pub fn axe_script() -> Result<String, String> {
    let path =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("browser/node_modules/axe-core/axe.min.js");
    std::fs::read_to_string(&path).map_err(|e| {
        format!(
            "{}: {e} (run `npm ci --ignore-scripts` in tests/browser)",
            path.display()
        )
    })
}

/// Reports that the browser is unavailable: panics under CI, says "skipped" otherwise.
pub fn unavailable(reason: &str) {
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("the browser tests need Chromium, chromedriver and axe-core under CI: {reason}");
    }
    eprintln!("skipped: browser unavailable: {reason}");
}

/// A headless Chromium session.
#[derive(Debug)]
pub struct Browser {
    pub client: Client,
    driver: Child,
    _profile: tempfile::TempDir,
}

impl Browser {
    /// Starts chromedriver and a browser window `width` CSS pixels wide; `None` (after
    /// [`unavailable`]) when they are not installed.
    pub async fn start(width: u32) -> Option<Self> {
        Self::launch(width, false).await
    }

    /// As [`Browser::start`], accepting certificates no trusted CA issued (W3C WebDriver
    /// `acceptInsecureCerts`): for the test OpenID provider's own CA.
    pub async fn start_accepting_test_certificates(width: u32) -> Option<Self> {
        Self::launch(width, true).await
    }

    async fn launch(width: u32, accept_insecure_certs: bool) -> Option<Self> {
        for program in [CHROMIUM, CHROMEDRIVER] {
            if !std::path::Path::new(program).exists() {
                unavailable(&format!(
                    "{program} is missing (Debian: chromium, chromium-driver)"
                ));
                return None;
            }
        }
        let port = free_port();
        let profile = tempfile::tempdir().expect("profile folder");
        let driver = Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .arg("--allowed-ips=127.0.0.1")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver starts");
        let mut capabilities = serde_json::Map::new();
        capabilities.insert("acceptInsecureCerts".into(), json!(accept_insecure_certs));
        capabilities.insert(
            "goog:chromeOptions".into(),
            json!({
                "binary": CHROMIUM,
                "args": [
                    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                    "--disable-quic", "--no-first-run", "--disable-background-networking",
                    "--disable-component-update", "--disable-sync", "--disable-extensions",
                    "--disable-features=Translate,OptimizationHints,MediaRouter",
                    "--hide-scrollbars", "--force-device-scale-factor=1",
                    format!("--user-data-dir={}", profile.path().display()),
                    format!("--window-size={width},900"),
                ],
            }),
        );
        let url = format!("http://127.0.0.1:{port}");
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        let client = loop {
            match ClientBuilder::new(HttpConnector::new())
                .capabilities(capabilities.clone())
                .connect(&url)
                .await
            {
                Ok(client) => break client,
                Err(e) if std::time::Instant::now() < deadline => {
                    let _ = e;
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(e) => panic!("chromedriver did not start a session: {e}"),
            }
        };
        let browser = Self {
            client,
            driver,
            _profile: profile,
        };
        browser.resize(width).await;
        Some(browser)
    }

    /// Makes the page's viewport `width` CSS pixels wide.
    pub async fn resize(&self, width: u32) {
        self.client
            .set_window_size(width.max(500), 900)
            .await
            .expect("window size");
        // Chromium keeps windows at least 500 px wide; narrower layouts are emulated.
        let emulate = width < 500;
        let params = if emulate {
            json!({"width": width, "height": 900, "deviceScaleFactor": 1, "mobile": true})
        } else {
            json!({"width": 0, "height": 0, "deviceScaleFactor": 0, "mobile": false})
        };
        let command = if emulate {
            "Emulation.setDeviceMetricsOverride"
        } else {
            "Emulation.clearDeviceMetricsOverride"
        };
        self.cdp(command, if emulate { params } else { json!({}) })
            .await;
    }

    /// A Chrome DevTools Protocol command, through chromedriver's `goog/cdp/execute`.
    async fn cdp(&self, cmd: &str, params: Value) -> Value {
        self.client
            .issue_cmd(CdpCommand {
                cmd: cmd.to_owned(),
                params,
            })
            .await
            .unwrap_or_else(|e| panic!("{cmd}: {e}"))
    }

    pub async fn goto(&self, url: &str) {
        self.client.goto(url).await.expect("navigate");
    }

    pub async fn title(&self) -> String {
        self.client.title().await.expect("title")
    }

    /// The page's text (`document.body.innerText`).
    pub async fn text(&self) -> String {
        self.client
            .find(Locator::Css("body"))
            .await
            .expect("body")
            .text()
            .await
            .expect("text")
    }

    pub async fn click(&self, css: &str) {
        self.client
            .find(Locator::Css(css))
            .await
            .unwrap_or_else(|e| panic!("{css}: {e}"))
            .click()
            .await
            .unwrap_or_else(|e| panic!("click {css}: {e}"));
    }

    /// Presses Tab until the focused element matches `css` (at most 200 times), as a keyboard
    /// user moves through a page.
    pub async fn tab_to(&self, css: &str) {
        for _ in 0..200 {
            let matched = self
                .client
                .execute(
                    "return document.activeElement && document.activeElement.matches(arguments[0]);",
                    vec![json!(css)],
                )
                .await
                .expect("script");
            if matched == json!(true) {
                return;
            }
            self.press(&Key::Tab.to_string()).await;
        }
        panic!("Tab never reached {css}");
    }

    /// Sends keys to the focused element.
    pub async fn press(&self, keys: &str) {
        self.client
            .active_element()
            .await
            .expect("focused element")
            .send_keys(keys)
            .await
            .expect("keys");
    }

    /// Runs axe-core on the page: the WCAG 2.0/2.1 A and AA rules' violations, each as
    /// `rule: selector …`.
    pub async fn axe(&self, script: &str) -> Vec<String> {
        self.client
            .execute(script, Vec::new())
            .await
            .expect("inject axe-core");
        let result = self
            .client
            .execute_async(
                "const done = arguments[arguments.length - 1];
                 axe.run(document, { runOnly: { type: 'tag',
                     values: ['wcag2a', 'wcag2aa', 'wcag21a', 'wcag21aa'] } })
                   .then(r => done(r.violations.map(v => v.id + ': ' +
                       v.nodes.map(n => n.target.join(' ')).join(', '))))
                   .catch(e => done(['axe failed: ' + e]));",
                Vec::new(),
            )
            .await
            .expect("axe.run");
        result
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|v| v.as_str().unwrap_or_default().to_owned())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// A PNG of the whole page, beyond the viewport.
    pub async fn screenshot(&self) -> Vec<u8> {
        use base64::Engine;
        let shot = self
            .cdp(
                "Page.captureScreenshot",
                json!({"format": "png", "captureBeyondViewport": true}),
            )
            .await;
        base64::engine::general_purpose::STANDARD
            .decode(shot["data"].as_str().unwrap_or_default())
            .expect("PNG in base64")
    }

    /// Ends the session and the driver.
    pub async fn close(mut self) {
        let _ = self.client.clone().close().await;
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

/// chromedriver's vendor command for the DevTools protocol.
#[derive(Debug)]
struct CdpCommand {
    cmd: String,
    params: Value,
}

impl fantoccini::wd::WebDriverCompatibleCommand for CdpCommand {
    fn endpoint(
        &self,
        base_url: &url::Url,
        session_id: Option<&str>,
    ) -> Result<url::Url, url::ParseError> {
        base_url.join(&format!(
            "session/{}/goog/cdp/execute",
            session_id.unwrap_or_default()
        ))
    }

    fn method_and_body(&self, _: &url::Url) -> (http::Method, Option<String>) {
        (
            http::Method::POST,
            Some(json!({"cmd": self.cmd, "params": self.params}).to_string()),
        )
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}
