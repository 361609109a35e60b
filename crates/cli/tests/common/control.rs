//! The `vm` control socket's client for the binary's tests.

use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

/// A control socket client speaking the JSON lines.
pub struct Control {
    input: std::io::BufReader<UnixStream>,
    output: UnixStream,
}

impl Control {
    pub fn connect(path: &Path) -> Self {
        use std::io::BufRead;
        let stream = UnixStream::connect(path).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(60)))
            .unwrap();
        let mut c = Self {
            output: stream.try_clone().unwrap(),
            input: std::io::BufReader::new(stream),
        };
        let mut greeting = String::new();
        c.input.read_line(&mut greeting).unwrap();
        assert!(greeting.contains("virtio-lm"), "{greeting}");
        c
    }

    pub fn execute(&mut self, request: Value) -> Value {
        use std::io::{BufRead, Write};
        writeln!(self.output, "{request}").unwrap();
        let mut line = String::new();
        self.input.read_line(&mut line).unwrap();
        serde_json::from_str(&line).unwrap()
    }

    pub fn status(&mut self) -> Value {
        self.execute(json!({"execute": "status"}))["return"].take()
    }

    /// Polls `status` until `done` holds (60 s at most).
    pub fn wait(&mut self, what: &str, done: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let s = self.status();
            if done(&s) {
                return s;
            }
            assert!(Instant::now() < deadline, "waited for {what}: {s:#}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Control {
    /// Quits a destination and checks the guest's verification there: 0 lost, 0 duplicated,
    /// 0 corrupted, and some requests verified. Returns `quit`'s answer.
    pub fn quit_verified(&mut self) -> Value {
        let end = self.execute(json!({"execute": "quit"}))["return"].take();
        let v = &end["verification"];
        assert_eq!(
            (&v["lost"], &v["duplicated"], &v["corrupted"]),
            (&json!(0), &json!(0), &json!(0)),
            "{end:#}"
        );
        assert!(v["requests_verified"].as_u64().unwrap() > 0, "{end:#}");
        end
    }
}

/// Requests the guest's blk workload completed, as `status` shows them.
pub fn blk(status: &Value) -> u64 {
    status["guest"]["blk_completed"].as_u64().unwrap()
}
