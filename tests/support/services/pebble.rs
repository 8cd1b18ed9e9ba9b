//! [`Pebble`]: a real ACME CA offline — Debian's `pebble` with `pebble-challtestsrv` as
//! its DNS server (and the platform's), on free loopback ports. Its API is served with a
//! small CA made here (`api_root`); what it issues chains to its own root, new at every
//! start (`issuing_root`).

use std::process::{Child, Command};
use std::time::Duration;

use super::*;
use crate::{free_port, wait_for_port, TempDir};

pub struct Pebble {
    pub dir: TempDir,
    /// The ACME directory URL.
    pub directory: String,
    /// `IP:PORT` of the DNS server (challtestsrv), for pebble and the platform alike.
    pub dns: String,
    management: u16,
    challtest_management: u16,
    children: Vec<Child>,
}

impl Pebble {
    /// Starts challtestsrv and pebble; pebble validates HTTP-01 on `http_port` and
    /// TLS-ALPN-01 on `tls_port`, and issues certificates valid `validity` seconds.
    pub fn start(http_port: u16, tls_port: u16, validity: u64) -> Pebble {
        Self::start_with_eab(http_port, tls_port, validity, None)
    }

    /// [`Pebble::start`] requiring External Account Binding with `(key id, HMAC key)`
    /// (base64url) when given.
    pub fn start_with_eab(
        http_port: u16,
        tls_port: u16,
        validity: u64,
        eab: Option<(&str, &str)>,
    ) -> Pebble {
        Self::start_full(http_port, tls_port, validity, eab, None)
    }

    /// [`Pebble::start`] asking `dns` (`IP:PORT`) instead of challtestsrv, when given.
    pub fn start_with_dns(
        http_port: u16,
        tls_port: u16,
        validity: u64,
        dns: Option<&str>,
    ) -> Pebble {
        Self::start_full(http_port, tls_port, validity, None, dns)
    }

    fn start_full(
        http_port: u16,
        tls_port: u16,
        validity: u64,
        eab: Option<(&str, &str)>,
        pebble_dns: Option<&str>,
    ) -> Pebble {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = |name: &str| dir.path().join(name).display().to_string();
        // webpki refuses a CA certificate used as a server's: a leaf for pebble's API.
        make_test_certs(dir.path(), "api", "DNS:localhost,IP:127.0.0.1");
        let (api, management) = (free_port(), free_port());
        let (dns, challtest_management) = (free_port(), free_port());
        let config = serde_json::json!({"pebble": {
            "listenAddress": format!("127.0.0.1:{api}"),
            "managementListenAddress": format!("127.0.0.1:{management}"),
            "certificate": p("api.pem"),
            "privateKey": p("api.key"),
            "httpPort": http_port,
            "tlsPort": tls_port,
            "ocspResponderURL": "",
            "externalAccountBindingRequired": eab.is_some(),
            "externalAccountMACKeys": eab
                .map(|(kid, key)| serde_json::json!({ kid: key }))
                .unwrap_or_else(|| serde_json::json!({})),
            "certificateValidityPeriod": validity,
        }});
        std::fs::write(p("pebble.json"), config.to_string()).expect("write pebble.json");
        let challtest = Command::new("pebble-challtestsrv")
            .args(["-dns01", &format!("127.0.0.1:{dns}")])
            .args(["-management", &format!("127.0.0.1:{challtest_management}")])
            .args(["-http01", "", "-https01", "", "-tlsalpn01", ""])
            .args(["-defaultIPv4", "127.0.0.1", "-defaultIPv6", ""])
            .stdout(log_target())
            .stderr(log_target())
            .spawn()
            .expect("start pebble-challtestsrv (install.sh --dev installs pebble)");
        let pebble = Command::new("pebble")
            .args(["-config", &p("pebble.json")])
            .args([
                "-dnsserver",
                &pebble_dns.map_or_else(|| format!("127.0.0.1:{dns}"), str::to_string),
            ])
            .env("PEBBLE_VA_NOSLEEP", "1")
            .env("PEBBLE_WFE_NONCEREJECT", "0")
            .env("PEBBLE_AUTHZREUSE", "0")
            .stdout(std::fs::File::create(p("pebble.log")).expect("log"))
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("start pebble");
        let this = Pebble {
            directory: format!("https://127.0.0.1:{api}/dir"),
            dns: format!("127.0.0.1:{dns}"),
            dir,
            management,
            challtest_management,
            children: vec![challtest, pebble],
        };
        wait_for_port(challtest_management, Duration::from_secs(10));
        wait_for_port(api, Duration::from_secs(10));
        wait_for_port(management, Duration::from_secs(10));
        this
    }

    /// The PEM roots pebble's API is served with (`--acme-root`).
    pub fn api_root(&self) -> String {
        self.dir.path().join("ca.pem").display().to_string()
    }

    /// The root what pebble issues chains to.
    pub fn issuing_root(&self) -> reqwest::Certificate {
        let ca = std::fs::read(self.api_root()).expect("api root");
        let client = reqwest::blocking::Client::builder()
            .add_root_certificate(reqwest::Certificate::from_pem(&ca).expect("pem"))
            .build()
            .expect("client");
        let pem = client
            .get(format!("https://127.0.0.1:{}/roots/0", self.management))
            .send()
            .and_then(|r| r.bytes())
            .expect("pebble's root");
        reqwest::Certificate::from_pem(&pem).expect("root pem")
    }

    /// How many certificates pebble has issued (its log says so for each).
    pub fn issued(&self) -> usize {
        std::fs::read_to_string(self.dir.path().join("pebble.log"))
            .unwrap_or_default()
            .matches("Issued certificate serial")
            .count()
    }

    /// How many orders were placed.
    pub fn orders(&self) -> usize {
        std::fs::read_to_string(self.dir.path().join("pebble.log"))
            .unwrap_or_default()
            .matches("POST /order-plz")
            .count()
    }

    /// challtestsrv's management URL (`/set-txt`, `/clear-txt`, …).
    pub fn challtest_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.challtest_management)
    }

    /// Makes `host` resolve to `ip` only (an A record pointing elsewhere).
    pub fn set_a(&self, host: &str, ip: &str) {
        self.challtest(
            "add-a",
            serde_json::json!({"host": format!("{host}."), "addresses": [ip]}),
        );
    }

    /// Adds a TXT record for `host`.
    pub fn set_txt(&self, host: &str, value: &str) {
        self.challtest(
            "set-txt",
            serde_json::json!({"host": format!("{host}."), "value": value}),
        );
    }

    /// Back to the default answer (127.0.0.1).
    pub fn clear_a(&self, host: &str) {
        self.challtest("clear-a", serde_json::json!({"host": format!("{host}.")}));
    }

    fn challtest(&self, what: &str, body: serde_json::Value) {
        let resp = reqwest::blocking::Client::new()
            .post(format!(
                "http://127.0.0.1:{}/{what}",
                self.challtest_management
            ))
            .body(body.to_string())
            .send()
            .expect("challtestsrv");
        assert!(
            resp.status().is_success(),
            "challtestsrv {what}: {}",
            resp.status()
        );
    }
}

impl Drop for Pebble {
    fn drop(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A CA (`ca.pem`, `ca.key`) and a leaf it signed for `sans` (`DNS:localhost,IP:…`)
/// as `<leaf>.pem` and `<leaf>.key`, in `dir`: what a TLS server under test is given
/// (their paths, for `--tls-cert` and `--tls-key`).
pub fn make_test_certs(dir: &std::path::Path, leaf: &str, sans: &str) -> (String, String) {
    let p = |name: &str| dir.join(name).display().to_string();
    let openssl = |args: &[&str]| run_ok(Command::new("openssl").args(args));
    openssl(&[
        "req",
        "-x509",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
        "-keyout",
        &p("ca.key"),
        "-out",
        &p("ca.pem"),
        "-days",
        "2",
        "-subj",
        "/CN=cdeploy test CA",
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=critical,keyCertSign,cRLSign",
    ]);
    let (key, csr, pem, ext) = (
        p(&format!("{leaf}.key")),
        p(&format!("{leaf}.csr")),
        p(&format!("{leaf}.pem")),
        p(&format!("{leaf}.ext")),
    );
    openssl(&[
        "req",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
        "-keyout",
        &key,
        "-out",
        &csr,
        "-subj",
        &format!("/CN={leaf}"),
    ]);
    std::fs::write(
        &ext,
        format!("subjectAltName={sans}\nbasicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n"),
    )
    .expect("leaf extensions");
    openssl(&[
        "x509",
        "-req",
        "-in",
        &csr,
        "-CA",
        &p("ca.pem"),
        "-CAkey",
        &p("ca.key"),
        "-CAcreateserial",
        "-out",
        &pem,
        "-days",
        "2",
        "-extfile",
        &ext,
    ]);
    (pem, key)
}
