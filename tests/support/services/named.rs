//! [`Named`]: BIND's `named`, primary for one zone on a free loopback port, taking
//! dynamic updates (RFC 2136) signed with a TSIG key, and only for the zone's
//! `_acme-challenge` TXT records (as an operator would grant an ACME client).

use std::process::{Child, Command};
use std::time::Duration;

use super::*;
use crate::{free_port, wait_for_port, TempDir};

pub struct Named {
    pub dir: TempDir,
    /// `127.0.0.1:PORT`, for DNS queries and updates alike.
    pub addr: String,
    /// The TSIG key's name and its secret (base64).
    pub key_name: String,
    pub secret: String,
    child: Child,
}

impl Named {
    /// Starts `named` as the primary of `zone`, whose names all resolve to 127.0.0.1.
    pub fn start(zone: &str) -> Named {
        let dir = tempfile::tempdir().expect("tempdir");
        let d = dir.path().display().to_string();
        let port = free_port();
        let secret = run_ok(Command::new("openssl").args(["rand", "-base64", "32"]))
            .trim()
            .to_string();
        let key_name = "cdeploy-acme".to_string();
        let conf = format!(
            r#"options {{
  directory "{d}";
  listen-on port {port} {{ 127.0.0.1; }};
  listen-on-v6 {{ none; }};
  pid-file "{d}/named.pid";
  session-keyfile "{d}/session.key";
  recursion no;
  dnssec-validation no;
  allow-query {{ any; }};
}};
controls {{ }};
key "{key_name}" {{ algorithm hmac-sha256; secret "{secret}"; }};
zone "{zone}" {{
  type primary;
  file "{d}/zone.db";
  update-policy {{ grant {key_name} name _acme-challenge.{zone}. TXT; }};
}};
"#
        );
        std::fs::write(dir.path().join("named.conf"), conf).expect("named.conf");
        let db = format!(
            "$TTL 60\n@ IN SOA ns.{zone}. admin.{zone}. 1 60 60 600 60\n@ IN NS ns.{zone}.\nns IN A 127.0.0.1\n@ IN A 127.0.0.1\n* IN A 127.0.0.1\n"
        );
        std::fs::write(dir.path().join("zone.db"), db).expect("zone.db");
        let named = find_program("NAMED", &[PathBuf::from("/usr/sbin/named")], "named");
        let child = Command::new(named)
            .args(["-g", "-n", "1", "-c"])
            .arg(dir.path().join("named.conf"))
            .stdout(std::fs::File::create(dir.path().join("named.log")).expect("log"))
            .stderr(std::fs::File::create(dir.path().join("named.err")).expect("log"))
            .spawn()
            .expect("start named (install.sh --dev installs bind9)");
        wait_for_port(port, Duration::from_secs(20));
        Named {
            addr: format!("127.0.0.1:{port}"),
            dir,
            key_name,
            secret,
            child,
        }
    }

    /// The TXT values of `name` as the server answers them now.
    pub fn txt(&self, name: &str) -> Vec<String> {
        let (ip, port) = self.addr.split_once(':').expect("IP:PORT");
        let out = run_ok(
            Command::new("dig")
                .args(["+short", "+norecurse", "-p", port])
                .arg(format!("@{ip}"))
                .args(["TXT", name]),
        );
        out.lines()
            .map(|l| l.trim_matches('"').to_string())
            .collect()
    }

    /// What `named` logged (updates granted and refused).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("named.err")).unwrap_or_default()
    }
}

impl Drop for Named {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
