//! [`write_ready_file`]: a server's bound addresses, for whoever started it with
//! `--listen …:0` (a supervisor, the e2e harness).

use std::net::SocketAddr;
use std::path::Path;

/// Writes `{"name":"addr",…}` to `path`, whole (a temporary file renamed over it, so a
/// reader never sees half). Socket addresses and the names given need no JSON escaping.
pub fn write_ready_file(path: &Path, addrs: &[(&str, SocketAddr)]) -> std::io::Result<()> {
    let fields: Vec<String> = addrs
        .iter()
        .map(|(name, addr)| format!("\"{name}\":\"{addr}\""))
        .collect();
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, format!("{{{}}}\n", fields.join(",")))?;
    std::fs::rename(&tmp, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_file_is_json_with_every_address() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ready.json");
        let api: SocketAddr = "127.0.0.1:9000".parse().unwrap();
        let proxy: SocketAddr = "127.0.0.1:8000".parse().unwrap();
        write_ready_file(&path, &[("api", api), ("proxy", proxy)]).unwrap();
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            "{\"api\":\"127.0.0.1:9000\",\"proxy\":\"127.0.0.1:8000\"}\n"
        );
        assert!(!dir.path().join("ready.tmp").exists());
    }
}
