//! A real browser for the dashboard tests: headless Chromium (`CHROMIUM`,
//! which `cargo xtask test` provides, else `chromium` on PATH), driven over
//! the Chrome DevTools Protocol on its WebSocket: pages in their own
//! browser contexts (a fresh context shares no storage with another, like a
//! different person's browser), script evaluation, key presses, viewport
//! sizes and screenshots, and every console error and uncaught exception a
//! page produces.

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
    process::Stdio,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use base64::Engine as _;
use futures::{SinkExt as _, StreamExt as _};
use serde_json::{Value, json};
use tokio::{
    io::{AsyncBufReadExt as _, BufReader},
    sync::{mpsc, oneshot},
};
use tokio_tungstenite::tungstenite::Message;

type Replies = Arc<Mutex<HashMap<u64, oneshot::Sender<Result<Value, String>>>>>;

/// One DevTools connection: commands by id, events kept by session.
#[derive(Clone)]
struct Cdp {
    outgoing: mpsc::UnboundedSender<Message>,
    replies: Replies,
    next_id: Arc<AtomicU64>,
    /// Events per session id ("" for the browser's own).
    events: Arc<Mutex<HashMap<String, Vec<Value>>>>,
}

impl Cdp {
    async fn connect(url: &str) -> Self {
        let (socket, _) = tokio_tungstenite::connect_async(url)
            .await
            .unwrap_or_else(|e| panic!("cannot open the DevTools socket {url}: {e}"));
        let (mut sink, mut stream) = socket.split();
        let (outgoing, mut queue) = mpsc::unbounded_channel::<Message>();
        tokio::spawn(async move {
            while let Some(message) = queue.recv().await {
                if sink.send(message).await.is_err() {
                    break;
                }
            }
        });
        let replies: Replies = Arc::default();
        let events: Arc<Mutex<HashMap<String, Vec<Value>>>> = Arc::default();
        let (reply_to, keep) = (replies.clone(), events.clone());
        tokio::spawn(async move {
            while let Some(Ok(message)) = stream.next().await {
                let Message::Text(text) = message else {
                    continue;
                };
                let Ok(value) = serde_json::from_str::<Value>(&text) else {
                    continue;
                };
                if let Some(id) = value["id"].as_u64() {
                    let reply = reply_to.lock().ok().and_then(|mut r| r.remove(&id));
                    let result = match value.get("error") {
                        Some(error) => Err(error.to_string()),
                        None => Ok(value["result"].clone()),
                    };
                    if let Some(reply) = reply {
                        reply.send(result).ok();
                    }
                } else if let Ok(mut events) = keep.lock() {
                    let session = value["sessionId"].as_str().unwrap_or("").to_owned();
                    events.entry(session).or_default().push(value);
                }
            }
        });
        Self {
            outgoing,
            replies,
            next_id: Arc::new(AtomicU64::new(1)),
            events,
        }
    }

    /// Sends a command (to a page's session, or the browser) and waits for
    /// its result; panics on an error.
    async fn call(&self, session: Option<&str>, method: &str, params: Value) -> Value {
        self.try_call(session, method, params)
            .await
            .unwrap_or_else(|error| panic!("{method} failed: {error}"))
    }

    /// Sends a command and waits for its result or its error.
    async fn try_call(
        &self,
        session: Option<&str>,
        method: &str,
        params: Value,
    ) -> Result<Value, String> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let mut command = json!({ "id": id, "method": method, "params": params });
        if let Some(session) = session {
            command["sessionId"] = json!(session);
        }
        let (reply, answer) = oneshot::channel();
        if let Ok(mut replies) = self.replies.lock() {
            replies.insert(id, reply);
        }
        self.outgoing
            .send(Message::text(command.to_string()))
            .map_err(|_| format!("the DevTools socket closed before {method}"))?;
        match tokio::time::timeout(Duration::from_secs(30), answer).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err(format!("the DevTools socket closed during {method}")),
            Err(_) => Err(format!("{method} got no answer within 30 s")),
        }
    }
}

/// A headless Chromium, killed when dropped.
pub struct Browser {
    cdp: Cdp,
    _child: tokio::process::Child,
    profile: PathBuf,
}

impl Drop for Browser {
    fn drop(&mut self) {
        std::fs::remove_dir_all(&self.profile).ok();
    }
}

impl Browser {
    /// Starts Chromium with its own throwaway profile, in UTC and US
    /// English (so numbers format one known way).
    pub async fn launch() -> Self {
        static LAUNCHES: AtomicU64 = AtomicU64::new(0);
        let bin = std::env::var("CHROMIUM").unwrap_or_else(|_| "chromium".to_owned());
        let profile = std::env::temp_dir().join(format!(
            "kpi-chromium-{}-{}",
            std::process::id(),
            LAUNCHES.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::remove_dir_all(&profile).ok();
        let mut child = tokio::process::Command::new(&bin)
            .args([
                "--headless=new",
                // Root in CI: Chromium's sandbox needs an unprivileged user.
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--no-first-run",
                "--no-default-browser-check",
                "--disable-extensions",
                "--lang=en-US",
                "--remote-debugging-port=0",
            ])
            .arg(format!("--user-data-dir={}", profile.display()))
            .arg("about:blank")
            .env("TZ", "UTC")
            .env("LANG", "en_US.UTF-8")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot start Chromium ({bin}): {e}; use `cargo xtask test`")
            });
        let stderr = child.stderr.take().unwrap_or_else(|| unreachable!());
        let mut lines = BufReader::new(stderr).lines();
        let find = async {
            while let Ok(Some(line)) = lines.next_line().await {
                if let Some(url) = line.split("DevTools listening on ").nth(1) {
                    return Some(url.trim().to_owned());
                }
            }
            None
        };
        let url = tokio::time::timeout(Duration::from_secs(30), find)
            .await
            .ok()
            .flatten()
            .unwrap_or_else(|| panic!("Chromium ({bin}) did not open its DevTools socket"));
        // Keep draining its stderr so it never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        let cdp = Cdp::connect(&url).await;
        Self {
            cdp,
            _child: child,
            profile,
        }
    }

    /// A new tab in a new browser context (its own storage and cookies),
    /// `width` x `height` CSS pixels; `mobile` emulates a phone.
    pub async fn page(&self, width: u32, height: u32, mobile: bool) -> Page {
        let context = self
            .cdp
            .call(None, "Target.createBrowserContext", json!({}))
            .await;
        let target = self
            .cdp
            .call(
                None,
                "Target.createTarget",
                json!({ "url": "about:blank", "browserContextId": context["browserContextId"] }),
            )
            .await;
        let attached = self
            .cdp
            .call(
                None,
                "Target.attachToTarget",
                json!({ "targetId": target["targetId"], "flatten": true }),
            )
            .await;
        let session = attached["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no session: {attached}"))
            .to_owned();
        let page = Page {
            cdp: self.cdp.clone(),
            session,
        };
        for domain in ["Page.enable", "Runtime.enable", "Log.enable"] {
            page.call(domain, json!({})).await;
        }
        page.call(
            "Emulation.setDeviceMetricsOverride",
            json!({ "width": width, "height": height, "deviceScaleFactor": 1, "mobile": mobile }),
        )
        .await;
        page
    }
}

/// One tab.
pub struct Page {
    cdp: Cdp,
    session: String,
}

impl Page {
    async fn call(&self, method: &str, params: Value) -> Value {
        self.cdp.call(Some(&self.session), method, params).await
    }

    /// Opens `url` and waits until its document has loaded.
    pub async fn goto(&self, url: &str) {
        let answer = self.call("Page.navigate", json!({ "url": url })).await;
        assert!(
            answer.get("errorText").is_none(),
            "cannot open {url}: {answer}"
        );
        self.wait_for(
            &format!(
                "document.readyState === 'complete' && location.href.startsWith({})",
                json!(url.split(['#', '?']).next().unwrap_or(url))
            ),
            Duration::from_secs(30),
        )
        .await;
    }

    /// The value of a JavaScript expression (promises awaited), or why
    /// there is none (an exception, or no page to run it in yet).
    async fn try_eval(&self, expression: &str) -> Result<Value, String> {
        let answer = self
            .cdp
            .try_call(
                Some(&self.session),
                "Runtime.evaluate",
                json!({ "expression": expression, "awaitPromise": true, "returnByValue": true }),
            )
            .await?;
        match answer.get("exceptionDetails") {
            Some(exception) => Err(format!("{expression} threw: {exception}")),
            None => Ok(answer["result"]["value"].clone()),
        }
    }

    /// The value of a JavaScript expression (promises awaited); panics on
    /// an exception.
    pub async fn eval(&self, expression: &str) -> Value {
        self.try_eval(expression)
            .await
            .unwrap_or_else(|problem| panic!("{problem}"))
    }

    /// Waits (up to `timeout`) until `expression` is truthy; its value.
    pub async fn wait_for(&self, expression: &str, timeout: Duration) -> Value {
        let checked =
            format!("(() => {{ try {{ return {expression}; }} catch (e) {{ return null; }} }})()");
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            // A navigation in progress has no context to run in: try again.
            let value = self.try_eval(&checked).await.unwrap_or(Value::Null);
            let truthy = match &value {
                Value::Null => false,
                Value::Bool(b) => *b,
                Value::Number(n) => n.as_f64() != Some(0.0),
                Value::String(s) => !s.is_empty(),
                _ => true,
            };
            if truthy {
                return value;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "waited {timeout:?} for `{expression}`; page state: {}; errors: {:?}",
                self.eval("document.body.dataset.state + ' / ' + (document.getElementById('error')?.textContent ?? '')")
                    .await,
                self.errors()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Types `text` into the focused element, as a keyboard would.
    pub async fn type_text(&self, text: &str) {
        self.call("Input.insertText", json!({ "text": text })).await;
    }

    /// Presses and releases a key (`Enter`, `Tab`, ...).
    pub async fn press(&self, key: &str, code: u32) {
        for kind in ["keyDown", "keyUp"] {
            let mut event =
                json!({ "type": kind, "key": key, "code": key, "windowsVirtualKeyCode": code });
            if kind == "keyDown" && key == "Enter" {
                event["text"] = json!("\r");
            }
            self.call("Input.dispatchKeyEvent", event).await;
        }
    }

    /// A PNG of the whole page (not only the viewport), written to `path`.
    pub async fn screenshot(&self, path: &Path) {
        let size = self
            .eval("[document.documentElement.clientWidth, document.documentElement.scrollHeight]")
            .await;
        let shot = self
            .call(
                "Page.captureScreenshot",
                json!({
                    "format": "png",
                    "captureBeyondViewport": true,
                    "clip": { "x": 0, "y": 0, "width": size[0], "height": size[1], "scale": 1 },
                }),
            )
            .await;
        let png = base64::engine::general_purpose::STANDARD
            .decode(shot["data"].as_str().unwrap_or_default())
            .unwrap_or_else(|e| panic!("a screenshot that is not base64: {e}"));
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).ok();
        }
        std::fs::write(path, png)
            .unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
    }

    /// Every console error, uncaught exception and failed load so far.
    pub fn errors(&self) -> Vec<String> {
        let events = self
            .cdp
            .events
            .lock()
            .map(|e| e.get(&self.session).cloned());
        events
            .ok()
            .flatten()
            .unwrap_or_default()
            .into_iter()
            .filter_map(|event| match event["method"].as_str() {
                Some("Runtime.exceptionThrown") => {
                    Some(event["params"]["exceptionDetails"].to_string())
                }
                Some("Runtime.consoleAPICalled") if event["params"]["type"] == "error" => {
                    Some(event["params"]["args"].to_string())
                }
                Some("Log.entryAdded") if event["params"]["entry"]["level"] == "error" => {
                    Some(event["params"]["entry"].to_string())
                }
                _ => None,
            })
            .collect()
    }
}
