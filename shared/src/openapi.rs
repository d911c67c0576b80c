//! OpenAPI schemas of the wire types whose serde form is written by hand (feature `openapi`, used by the server's
//! `/v1/openapi.json`); the derived ones sit on the types themselves.

use std::borrow::Cow;

use utoipa::openapi::schema::{ObjectBuilder, OneOfBuilder, Schema, SchemaType, Type};
use utoipa::openapi::RefOr;
use utoipa::{PartialSchema, ToSchema};

use crate::model::OfflineLease;
use crate::protocol::{Endpoint, ErrorCode};

fn string_enum(values: impl IntoIterator<Item = &'static str>, description: &str) -> RefOr<Schema> {
    ObjectBuilder::new()
        .schema_type(SchemaType::Type(Type::String))
        .enum_values(Some(values))
        .description(Some(description))
        .into()
}

impl PartialSchema for ErrorCode {
    fn schema() -> RefOr<Schema> {
        let list: String =
            ErrorCode::ALL.iter().map(|c| format!("- `{}` ({}):{}\n", c.as_str(), c.status(), c.describe())).collect();
        string_enum(
            ErrorCode::ALL.iter().map(|c| c.as_str()),
            &format!("The stable code of a refusal; it fixes the HTTP status. A client should treat a code it does not know by the status alone.\n\n{list}"),
        )
    }
}

impl ToSchema for ErrorCode {
    fn name() -> Cow<'static, str> {
        Cow::Borrowed("ErrorCode")
    }
}

impl PartialSchema for Endpoint {
    fn schema() -> RefOr<Schema> {
        string_enum(
            Endpoint::ALL.map(Endpoint::path),
            "The client endpoint a signed answer answers (its request path).",
        )
    }
}

impl ToSchema for Endpoint {
    fn name() -> Cow<'static, str> {
        Cow::Borrowed("Endpoint")
    }
}

impl PartialSchema for OfflineLease {
    fn schema() -> RefOr<Schema> {
        OneOfBuilder::new()
            .item(
                ObjectBuilder::new()
                    .schema_type(SchemaType::Type(Type::Integer))
                    .minimum(Some(1))
                    .maximum(Some(OfflineLease::MAX_DAYS)),
            )
            .item(string_enum(["never"], "the grant never ends (not for CONCURRENT licenses)"))
            .description(Some("Days an offline grant works before the device renews it, or \"never\"."))
            .into()
    }
}

impl ToSchema for OfflineLease {
    fn name() -> Cow<'static, str> {
        Cow::Borrowed("OfflineLease")
    }
}
