//! Storage keys. The same layout is used in a local directory and in an S3 bucket/prefix.

use crate::manifest::Encoding;

pub fn blob(hash: &str) -> String {
    format!("blobs/{hash}")
}

pub fn blob_variant(hash: &str, enc: Encoding) -> String {
    format!("blobs/{hash}.{}", enc.suffix())
}

pub fn source_map(deployment: &str) -> String {
    format!("deployments/{deployment}/source.json")
}

pub fn manifest(deployment: &str) -> String {
    format!("deployments/{deployment}/manifest.json")
}

pub fn log(deployment: &str) -> String {
    format!("deployments/{deployment}/log.jsonl")
}

pub fn route(slug: &str) -> String {
    format!("routes/{slug}.json")
}
