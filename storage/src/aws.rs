//! The AWS SDK as cdeploy configures it, for every AWS client in the workspace (S3 here,
//! ECS in the server): the standard credential chain with cdeploy's own settings on
//! top, one HTTP client on the TLS stack the rest of cdeploy uses, and AWS errors in the
//! service's own words.

use aws_config::{BehaviorVersion, Region};
use aws_sdk_s3::config::Credentials;
use aws_sdk_s3::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};

/// The AWS SDK configuration of the standard chain (`AWS_*` variables, profile, instance
/// or task role), with what cdeploy's own settings say on top: a region, static keys
/// (the seed's `S3_*`/`ECS_*` variables), an endpoint for compatible servers.
pub async fn aws_config_with(
    region: Option<&str>,
    credentials: Option<(&str, &str)>,
    endpoint: Option<&str>,
    source: &'static str,
) -> aws_config::SdkConfig {
    let mut loader = aws_config::defaults(BehaviorVersion::latest()).http_client(https_client());
    if let Some(region) = region {
        loader = loader.region(Region::new(region.to_string()));
    }
    if let Some((key, secret)) = credentials {
        loader = loader.credentials_provider(Credentials::new(key, secret, None, None, source));
    }
    if let Some(endpoint) = endpoint {
        loader = loader.endpoint_url(endpoint);
    }
    loader.load().await
}

/// The HTTP client of every AWS call (S3, ECS, and the credential providers' own calls):
/// hyper 1 with rustls on ring, the one TLS stack the rest of cdeploy uses, made once
/// per process (its connection pool is shared). The SDK's default client would bring
/// aws-lc, and its legacy one hyper 0.14 and rustls 0.21.
fn https_client() -> aws_sdk_s3::config::SharedHttpClient {
    use aws_smithy_http_client::tls;
    static CLIENT: std::sync::OnceLock<aws_sdk_s3::config::SharedHttpClient> =
        std::sync::OnceLock::new();
    CLIENT
        .get_or_init(|| {
            aws_smithy_http_client::Builder::new()
                .tls_provider(tls::Provider::Rustls(
                    tls::rustls_provider::CryptoMode::Ring,
                ))
                .build_https()
        })
        .clone()
}

/// An AWS SDK error in the service's own words (`InternalError: We encountered…`), or
/// the transport error when there was no answer.
pub fn sdk_error_message<E, R>(e: &SdkError<E, R>) -> String
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    R: std::fmt::Debug + Send + Sync + 'static,
{
    match e.as_service_error() {
        Some(service) => match (service.code(), service.message()) {
            (Some(code), Some(msg)) => format!("{code}: {msg}"),
            (Some(code), None) => code.to_string(),
            (None, Some(msg)) => msg.to_string(),
            (None, None) => DisplayErrorContext(e).to_string(),
        },
        None => DisplayErrorContext(e).to_string(),
    }
}
