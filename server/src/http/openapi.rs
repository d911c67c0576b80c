//! The OpenAPI 3 document, built from the route table.

use serde_json::{json, Map, Value};

/// Every route: method, path, tag, summary, auth ("admin", "metrics", "client", "device", "optional", "none").
pub const ROUTES: &[(&str, &str, &str, &str, &str)] = &[
    ("get", "/healthz", "ops", "Liveness", "none"),
    ("get", "/readyz", "ops", "Readiness (database reachable)", "none"),
    ("get", "/metrics", "ops", "Prometheus metrics (metrics token or vendor-admin token)", "metrics"),
    ("get", "/v1/openapi.json", "ops", "This document", "none"),
    ("post", "/v1/tenants", "tenants", "Create a tenant (vendor-admin)", "admin"),
    ("get", "/v1/tenants", "tenants", "List tenants", "admin"),
    ("get", "/v1/tenants/{id}", "tenants", "Get a tenant", "admin"),
    ("post", "/v1/tokens", "tokens", "Create an API token (returned once)", "admin"),
    ("get", "/v1/tokens", "tokens", "List API tokens", "admin"),
    ("delete", "/v1/tokens/{id}", "tokens", "Revoke an API token", "admin"),
    ("post", "/v1/customers", "customers", "Create a customer", "admin"),
    ("get", "/v1/customers", "customers", "List customers", "admin"),
    ("get", "/v1/customers/{id}", "customers", "Get a customer", "admin"),
    ("patch", "/v1/customers/{id}", "customers", "Update a customer", "admin"),
    ("post", "/v1/products", "products", "Create a product", "admin"),
    ("get", "/v1/products", "products", "List products", "admin"),
    ("get", "/v1/products/{id}", "products", "Get a product", "admin"),
    ("patch", "/v1/products/{id}", "products", "Update a product", "admin"),
    ("post", "/v1/templates", "templates", "Create a license template", "admin"),
    ("get", "/v1/templates", "templates", "List templates", "admin"),
    ("get", "/v1/templates/{id}", "templates", "Get a template", "admin"),
    ("patch", "/v1/templates/{id}", "templates", "Update a template (JSON merge patch)", "admin"),
    ("delete", "/v1/templates/{id}", "templates", "Delete a template", "admin"),
    ("post", "/v1/templates/{id}/duplicate", "templates", "Duplicate a template", "admin"),
    ("post", "/v1/licenses", "licenses", "Create a license (key returned once)", "admin"),
    (
        "get",
        "/v1/licenses",
        "licenses",
        "List licenses (filters: status, type, product_id, customer_id, expiring_before; cursor, limit)",
        "admin",
    ),
    ("post", "/v1/licenses/by-key", "licenses", "Get a license by its key", "admin"),
    ("get", "/v1/licenses/{id}", "licenses", "Get a license", "admin"),
    ("patch", "/v1/licenses/{id}", "licenses", "Update a license", "admin"),
    ("post", "/v1/licenses/{id}/renew", "licenses", "Renew a license", "admin"),
    ("post", "/v1/licenses/{id}/suspend", "licenses", "Suspend a license", "admin"),
    ("post", "/v1/licenses/{id}/reinstate", "licenses", "Reinstate a suspended license", "admin"),
    ("post", "/v1/licenses/{id}/revoke", "licenses", "Revoke a license (final)", "admin"),
    ("post", "/v1/licenses/{id}/transfer", "licenses", "Transfer a license to another customer", "admin"),
    ("get", "/v1/licenses/{id}/file", "licenses", "Download the signed license file", "admin"),
    ("get", "/v1/licenses/{id}/activations", "licenses", "List a license's activations", "admin"),
    ("post", "/v1/licenses/{id}/emergency-codes", "offline", "Issue an emergency code (support/admin)", "admin"),
    ("get", "/v1/licenses/{id}/emergency-codes", "offline", "List a license's emergency codes", "admin"),
    ("post", "/v1/activations/{id}/deactivate", "licenses", "Deactivate an activation (frees the seat)", "admin"),
    (
        "post",
        "/v1/activations/{id}/release",
        "licenses",
        "Release an activation's seat at once, with a reason (staff)",
        "admin",
    ),
    ("get", "/v1/events", "audit", "Lifecycle events (expiring soon, …)", "admin"),
    ("get", "/v1/audit", "audit", "Audit log entries", "admin"),
    ("get", "/v1/audit/verify", "audit", "Verify the audit hash chain of every tenant (vendor-admin)", "admin"),
    ("post", "/v1/security/validate-key", "security", "Check a license key", "admin"),
    ("post", "/v1/security/blocked-devices", "security", "Block a device", "admin"),
    ("get", "/v1/security/blocked-devices", "security", "List blocked devices", "admin"),
    ("delete", "/v1/security/blocked-devices/{id}", "security", "Unblock a device", "admin"),
    ("post", "/v1/security/reports", "security", "Report suspicious activity", "admin"),
    ("get", "/v1/security/reports", "security", "List suspicious-activity reports", "admin"),
    ("post", "/v1/offline/respond", "offline", "Answer an offline request code (support/admin)", "admin"),
    ("post", "/v1/offline/receipt", "offline", "Apply a deactivation receipt (support/admin)", "admin"),
    ("post", "/v1/jobs/run", "ops", "Run the lifecycle jobs now (vendor-admin)", "admin"),
    ("post", "/v1/client/activate", "client", "Activate a device (signed response)", "client"),
    ("post", "/v1/client/validate", "client", "Validate a license (signed response)", "client"),
    ("post", "/v1/client/heartbeat", "client", "Heartbeat (device-signed)", "device"),
    ("post", "/v1/client/deactivate", "client", "Deactivate (device-signed)", "device"),
    ("post", "/v1/client/offline/respond", "client", "Self-service offline response (license key)", "client"),
    ("post", "/v1/client/offline/receipt", "client", "Self-service deactivation receipt", "client"),
];

pub fn document() -> Value {
    let mut paths = Map::new();
    for (method, path, tag, summary, auth) in ROUTES {
        let entry = paths.entry(path.to_string()).or_insert_with(|| json!({}));
        let mut op = json!({
            "tags": [tag],
            "summary": summary,
            "operationId": format!("{method}_{}", path.trim_start_matches('/').replace(['/', '{', '}', '.', '-'], "_")),
            "responses": {
                "200": {"description": "Success", "content": {"application/json": {}}},
                "201": {"description": "Created", "content": {"application/json": {}}},
                "4XX": {"description": "Error", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}},
            },
        });
        if path.contains("{id}") {
            op["parameters"] = json!([{"name": "id", "in": "path", "required": true,
                                       "schema": {"type": "string", "format": "uuid"}}]);
        }
        if matches!(*method, "post" | "patch") {
            op["requestBody"] = json!({"required": !matches!(*auth, "none"),
                                       "content": {"application/json": {"schema": {"type": "object"}}}});
        }
        match *auth {
            "admin" => op["security"] = json!([{"bearer": []}]),
            "metrics" => {
                op["security"] = json!([{"bearer": []}]);
                op["description"] = json!(
                    "Bearer: the configured metrics token (metrics_token, TESSERA_METRICS_TOKEN) \
                    or a vendor-admin API token; 401 without either, 403 for other API tokens."
                );
            }
            "optional" => op["security"] = json!([{}, {"bearer": []}]),
            "device" => {
                op["parameters"] = json!([{"name": "X-Tessera-Signature", "in": "header", "required": true,
                    "description": "Ed25519 device signature of the raw body (base64url)", "schema": {"type": "string"}}]);
            }
            _ => {}
        }
        entry[*method] = op;
    }
    json!({
        "openapi": "3.0.3",
        "info": {"title": "Tessera licensing server", "version": env!("CARGO_PKG_VERSION"),
                 "description": "Admin API (Bearer API tokens) and client API (see docs/PROTOCOL.md)."},
        "paths": paths,
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": {"Error": {"type": "object", "required": ["error"], "properties": {"error": {
                "type": "object", "required": ["code", "message"],
                "properties": {"code": {"type": "string"}, "message": {"type": "string"}, "details": {"type": "object"}}}}}}
        }
    })
}
