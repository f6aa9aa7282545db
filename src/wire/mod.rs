//! The shapes on the wire: one type per request body and per answer of
//! the session API, the admin API and `/health`.
//!
//! Each shape is written once, here. The handlers in [`crate::http`]
//! return these types, the Rust client ([`crate::client`]) sends and
//! parses them, the CLI's `--json` prints them, and the OpenAPI document
//! ([`crate::http::openapi`]) is generated from their `ToSchema` derives,
//! so the document, the server and the client cannot drift apart. The
//! contract itself is docs/api.md.
//!
//! This module depends on the model and the clock only (never on HTTP or
//! storage), so every side can use it.

mod admin;
mod health;
mod session;
mod signing;

pub use admin::{
    AdminSession, CreatedKey, EventPage, KeyPage, KickAnswer, PatchStatus, SessionList,
};
pub use health::{DatabaseHealth, HealthAnswer, HealthStatus};
pub use session::{
    borrowed_at, BorrowAnswer, BorrowBody, DeviceBody, EndAnswer, HeartbeatAnswer, HeartbeatBody,
    SessionBody, StartAnswer, StartBody, StatusAnswer, StatusBody, StatusSession, SupersededBy,
    TerminatedSession,
};
pub use signing::{Jwk, JwkSet};

use serde_json::json;
use utoipa::openapi::schema::{KnownFormat, ObjectBuilder, SchemaFormat, Type};
use utoipa::openapi::{RefOr, Schema};
use utoipa::{PartialSchema, ToSchema};

use crate::clock::Timestamp;

impl PartialSchema for Timestamp {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(Type::String)
            .format(Some(SchemaFormat::KnownFormat(KnownFormat::DateTime)))
            .description(Some(
                "RFC 3339 in UTC, with milliseconds only when there are some.",
            ))
            .examples([json!("2026-11-30T07:22:18.386Z")])
            .into()
    }
}

impl ToSchema for Timestamp {}

/// For `#[serde(default, deserialize_with = "object_or_null")]` on an
/// optional nested struct: serde's derive would also read a struct from an
/// array of its fields (`"device": ["phone", "fp"]`); the contract's nested
/// values are objects, so only an object (or null) is accepted.
pub fn object_or_null<'de, D, T>(deserializer: D) -> Result<Option<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: serde::Deserialize<'de>,
{
    struct ObjectOrNull<T>(std::marker::PhantomData<T>);

    impl<'de, T: serde::Deserialize<'de>> serde::de::Visitor<'de> for ObjectOrNull<T> {
        type Value = Option<T>;

        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("an object or null")
        }

        fn visit_none<E>(self) -> Result<Self::Value, E> {
            Ok(None)
        }

        fn visit_unit<E>(self) -> Result<Self::Value, E> {
            Ok(None)
        }

        fn visit_some<D2: serde::Deserializer<'de>>(
            self,
            deserializer: D2,
        ) -> Result<Self::Value, D2::Error> {
            deserializer.deserialize_any(self)
        }

        fn visit_map<A: serde::de::MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
            T::deserialize(serde::de::value::MapAccessDeserializer::new(map)).map(Some)
        }
    }

    deserializer.deserialize_option(ObjectOrNull(std::marker::PhantomData))
}
