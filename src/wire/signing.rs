//! `GET /api/signing-keys`: the public keys that sign answers, as a JWK
//! set (RFC 7517, with RFC 8037's Ed25519 keys).

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// `GET /api/signing-keys`: the current key first, then keys retired less
/// than `signing_key_overlap_days` ago.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct JwkSet {
    pub keys: Vec<Jwk>,
}

/// One Ed25519 public key.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Jwk {
    /// Always `OKP`.
    #[schema(example = "OKP")]
    pub kty: String,
    /// Always `Ed25519`.
    #[schema(example = "Ed25519")]
    pub crv: String,
    /// The RFC 7638 thumbprint; the `kid` of `Keyseat-Signature`.
    #[schema(example = "kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k")]
    pub kid: String,
    /// The public key, base64url without padding: what an app pins.
    #[schema(example = "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo")]
    pub x: String,
    /// Always `sig`.
    #[serde(rename = "use")]
    #[schema(example = "sig")]
    pub use_: String,
}

impl Jwk {
    /// The JWK of an Ed25519 public key `x` (base64url) named `kid`.
    pub fn ed25519(kid: String, x: String) -> Jwk {
        Jwk {
            kty: "OKP".into(),
            crv: "Ed25519".into(),
            kid,
            x,
            use_: "sig".into(),
        }
    }
}
