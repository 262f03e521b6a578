//! A headless Chromium driven through chromedriver with the W3C WebDriver JSON protocol
//! over reqwest: enough of it (navigate, find, click, type, read text, run script, cookies,
//! screenshots) for the dashboard's browser tests. Debian's `chromium` and
//! `chromium-driver` are found on `PATH`; chromedriver listens on a free loopback port and
//! runs in its own process group, which is killed (with the browser) on drop.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine;
use serde_json::{Value, json};

/// The W3C name of an element reference in JSON.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

/// How long [`Browser::wait_for`] and friends wait before failing the test.
pub const WAIT: Duration = Duration::from_secs(30);

/// The path of an executable on `PATH`, like `which`.
fn which(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join(name))
            .find(|path| path.is_file())
    })
}

/// A free loopback port (bound, then released for chromedriver to take).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|addr| addr.port())
        .expect("a free port")
}

/// chromedriver and one browser session.
pub struct Browser {
    driver: Child,
    base: String,
    session: String,
    http: reqwest::Client,
}

impl Drop for Browser {
    fn drop(&mut self) {
        // chromedriver leads its own group, and Chromium's processes are in it.
        let group = -(self.driver.id() as i32);
        // SAFETY: kill(2) with a negative pid signals the process group we created.
        unsafe {
            libc::kill(group, libc::SIGKILL);
        }
        let _ = self.driver.wait();
    }
}

impl Browser {
    /// Starts chromedriver and a headless Chromium session; `None` (after
    /// [`super::skip_or_fail`]) when either is not installed.
    pub async fn start() -> Option<Self> {
        let (Some(chromium), Some(chromedriver)) = (which("chromium"), which("chromedriver"))
        else {
            super::skip_or_fail(
                "chromium and chromedriver (apt-get install chromium chromium-driver)",
            );
            return None;
        };
        let port = free_port();
        let mut command = Command::new(chromedriver);
        command
            .arg(format!("--port={port}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        std::os::unix::process::CommandExt::process_group(&mut command, 0);
        let driver = command.spawn().expect("start chromedriver");
        let mut browser = Self {
            driver,
            base: format!("http://127.0.0.1:{port}"),
            session: String::new(),
            http: super::http_client(),
        };
        browser.wait_ready().await;
        let profile = tempfile::tempdir().expect("profile dir").keep();
        let capabilities = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": chromium,
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu",
                         "--window-size=1280,900", "--disable-dev-shm-usage",
                         format!("--user-data-dir={}", profile.display())],
            },
        }}});
        let created = browser.post_raw("/session", capabilities).await;
        browser.session = created["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no WebDriver session: {created}"))
            .to_owned();
        Some(browser)
    }

    async fn wait_ready(&self) {
        let deadline = Instant::now() + WAIT;
        loop {
            let ready = self
                .http
                .get(format!("{}/status", self.base))
                .send()
                .await
                .ok();
            if let Some(response) = ready
                && let Ok(body) = response.json::<Value>().await
                && body["value"]["ready"] == json!(true)
            {
                return;
            }
            assert!(Instant::now() < deadline, "chromedriver did not start");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The answer's `value`, which may be a WebDriver error.
    async fn answer(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        let mut request = self.http.request(method, format!("{}{path}", self.base));
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.expect("WebDriver request");
        let answer: Value = response.json().await.expect("WebDriver JSON");
        answer["value"].clone()
    }

    async fn send(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        let value = self.answer(method, path, body).await;
        if value.get("error").is_some() {
            panic!("WebDriver {path}: {value}");
        }
        value
    }

    async fn post_raw(&self, path: &str, body: Value) -> Value {
        self.send(reqwest::Method::POST, path, Some(body)).await
    }

    async fn post(&self, path: &str, body: Value) -> Value {
        let path = format!("/session/{}{path}", self.session);
        self.send(reqwest::Method::POST, &path, Some(body)).await
    }

    async fn get(&self, path: &str) -> Value {
        let path = format!("/session/{}{path}", self.session);
        self.send(reqwest::Method::GET, &path, None).await
    }

    /// Opens `url` and waits for the page to load.
    pub async fn goto(&self, url: &str) {
        self.post("/url", json!({ "url": url })).await;
    }

    /// The address of the page shown.
    pub async fn url(&self) -> String {
        self.get("/url")
            .await
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    /// Runs `script` (a function body; `arguments` are `args`) and returns its value.
    pub async fn script(&self, script: &str, args: Value) -> Value {
        self.post("/execute/sync", json!({ "script": script, "args": args }))
            .await
    }

    /// Runs a Chrome DevTools Protocol command through chromedriver's `goog/cdp/execute`
    /// (e.g. `Performance.getMetrics`, which the W3C protocol has no equivalent for).
    pub async fn cdp(&self, command: &str, params: Value) -> Value {
        self.post(
            "/goog/cdp/execute",
            json!({ "cmd": command, "params": params }),
        )
        .await
    }

    /// Runs an async `script` whose last argument is the callback to call with the result.
    pub async fn script_async(&self, script: &str, args: Value) -> Value {
        self.post("/execute/async", json!({ "script": script, "args": args }))
            .await
    }

    /// The element `css` selects, if there is one now.
    pub async fn find(&self, css: &str) -> Option<String> {
        let path = format!("/session/{}/element", self.session);
        let response = self
            .http
            .post(format!("{}{path}", self.base))
            .json(&json!({"using": "css selector", "value": css}))
            .send()
            .await
            .expect("WebDriver request");
        let answer: Value = response.json().await.expect("WebDriver JSON");
        answer["value"][ELEMENT].as_str().map(str::to_owned)
    }

    /// The element `css` selects, waiting until it exists.
    pub async fn wait_for(&self, css: &str) -> String {
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(element) = self.find(css).await {
                return element;
            }
            assert!(
                Instant::now() < deadline,
                "no {css} on {} after {WAIT:?}:\n{}",
                self.url().await,
                self.text("body").await
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits until the text of `css` contains `expected`; returns that text.
    pub async fn wait_for_text(&self, css: &str, expected: &str) -> String {
        let deadline = Instant::now() + WAIT;
        loop {
            let text = self.text(css).await;
            if text.contains(expected) {
                return text;
            }
            assert!(
                Instant::now() < deadline,
                "{css} never showed {expected:?}; it shows {text:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The rendered text of the first element `css` selects ("" when there is none).
    pub async fn text(&self, css: &str) -> String {
        let Some(element) = self.find(css).await else {
            return String::new();
        };
        let path = format!("/session/{}/element/{element}/text", self.session);
        let value = self.answer(reqwest::Method::GET, &path, None).await;
        // The page was replaced (a reload) between finding the element and reading it: no
        // text yet, and a waiting caller looks again. Chromium reports it as a stale element
        // or, when the reload is midway, as an inspector error about the node's document.
        let detached = value["message"]
            .as_str()
            .is_some_and(|m| m.contains("does not belong to the document"));
        if value["error"] == "stale element reference" || detached {
            return String::new();
        }
        assert!(value.get("error").is_none(), "WebDriver {path}: {value}");
        value.as_str().unwrap_or_default().to_owned()
    }

    /// Clicks the element `css` selects (waiting for it).
    pub async fn click(&self, css: &str) {
        let element = self.wait_for(css).await;
        self.post(&format!("/element/{element}/click"), json!({}))
            .await;
    }

    /// Types `text` into the field `css` selects (waiting for it).
    pub async fn type_into(&self, css: &str, text: &str) {
        let element = self.wait_for(css).await;
        self.post(
            &format!("/element/{element}/value"),
            json!({ "text": text }),
        )
        .await;
    }

    /// Every cookie of the page's site, `HttpOnly` ones included (WebDriver sees them).
    pub async fn cookies(&self) -> Vec<Value> {
        self.get("/cookie")
            .await
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    /// A PNG of the viewport.
    pub async fn screenshot(&self) -> Vec<u8> {
        let encoded = self.get("/screenshot").await;
        base64::engine::general_purpose::STANDARD
            .decode(encoded.as_str().unwrap_or_default())
            .expect("screenshot is base64")
    }
}
