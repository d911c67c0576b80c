//! Tenants, API tokens, customers, products, license templates.

use rand_core::{OsRng, RngCore};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use tessera_core::license_key::{ct_eq, hash_secret};
use tessera_core::Template;
use uuid::Uuid;

use super::terms::validate_template;
use super::{check_code, check_name, merge_patch, reject_fields, slug, Ctx, PageQuery, Principal, Services};
use crate::error::{AppError, AppResult, ErrorCode};
use crate::store::{ApiToken, Customer, Page, Product, Role, TemplateRecord, Tenant};

/// Visible kind prefix of API tokens.
pub const TOKEN_PREFIX: &str = "tsa_";

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateTenant {
    pub name: String,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateToken {
    pub name: String,
    pub role: Role,
    #[serde(default)]
    pub tenant_id: Option<Uuid>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct CreatedToken {
    /// Shown once; only its hash is stored.
    pub token: String,
    #[serde(flatten)]
    pub info: ApiToken,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateCustomer {
    #[serde(default)]
    pub tenant_id: Option<Uuid>,
    pub name: String,
    #[serde(default)]
    pub email: Option<String>,
    #[serde(default)]
    pub metadata: Option<Value>,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateCustomer {
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub email: Option<String>,
    #[serde(default)]
    pub metadata: Option<Value>,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateProduct {
    #[serde(default)]
    pub tenant_id: Option<Uuid>,
    /// A product id of the vendor's choosing: vendor builds of the agent have their product id compiled in, so
    /// a product re-created on a new server (staging, a reinstall) must keep it. A new id is made when absent.
    #[serde(default)]
    pub id: Option<Uuid>,
    pub name: String,
    #[serde(default)]
    pub code: Option<String>,
    #[serde(default)]
    pub metadata: Option<Value>,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateProduct {
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub code: Option<String>,
    #[serde(default)]
    pub metadata: Option<Value>,
}

#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DuplicateTemplate {
    #[serde(default)]
    pub name: Option<String>,
}

fn check_email(e: &str) -> AppResult<String> {
    let e = e.trim();
    if e.len() > 254 || !e.contains('@') || e.starts_with('@') || e.ends_with('@') {
        return Err(AppError::invalid(format!("email {e:?} is not a valid address")));
    }
    Ok(e.to_string())
}

fn check_metadata(m: Option<Value>) -> AppResult<Value> {
    match m {
        None => Ok(json!({})),
        Some(v @ Value::Object(_)) => {
            if v.to_string().len() > 16 * 1024 {
                return Err(AppError::invalid("metadata is larger than 16 KiB"));
            }
            Ok(v)
        }
        Some(_) => Err(AppError::invalid("metadata must be a JSON object")),
    }
}

fn new_token_secret() -> String {
    let mut b = [0u8; 32];
    OsRng.fill_bytes(&mut b);
    format!("{TOKEN_PREFIX}{}", hex::encode(b))
}

/// The fields of `tessera_core::Template` a create or update body may carry.
const TEMPLATE_FIELDS: &[&str] = &[
    "product_id",
    "name",
    "license_type",
    "license_model",
    "max_activations",
    "duration_days",
    "maintenance_days",
    "grace_days",
    "features",
    "restrictions",
    "heartbeat_interval_secs",
    "lease_secs",
    "fingerprint_policy",
    "emergency",
    "offline",
    "transfer_policy",
    "metadata",
];

impl Services {
    /// Resolves a bearer token to its principal. Unknown, malformed and revoked tokens are all refused alike.
    pub async fn authenticate(&self, token: &str) -> AppResult<Principal> {
        let token = token.trim();
        if !token.starts_with(TOKEN_PREFIX) || token.len() > 200 {
            return Err(AppError::unauthorized(format!(
                "API tokens start with {TOKEN_PREFIX}: pass one as Authorization: Bearer {TOKEN_PREFIX}…"
            )));
        }
        self.principal_for_token_hash(hash_secret(token)).await
    }

    /// The principal of the token whose SHA-256 is `hash` (the console keeps the hash, never the secret, and
    /// checks it again on every page, so a revoked token ends its console sessions at once).
    pub async fn principal_for_token_hash(&self, hash: [u8; 32]) -> AppResult<Principal> {
        let refuse =
            || AppError::unauthorized("the API token is not valid (unknown, revoked or mistyped): use a current token");
        let found = self.store.find_token(hash).await.map_err(|e| AppError::store("token", e))?;
        let Some((info, stored)) = found else {
            return Err(refuse());
        };
        if !ct_eq(&stored, &hash) || info.revoked_at.is_some() {
            return Err(refuse());
        }
        Ok(Principal { token_id: info.id, tenant_id: info.tenant_id, role: info.role })
    }

    /// Creates the first vendor-admin token when the database has none; returns it.
    /// Creates the first vendor-admin token when there is none. `persist` saves the secret (the data directory's
    /// 0600 file) BEFORE the token is committed: a crash in between leaves no token, and the next start makes one.
    pub async fn bootstrap_admin(
        &self,
        preset: Option<String>,
        persist: impl FnOnce(&str) -> AppResult<()>,
    ) -> AppResult<Option<String>> {
        if self.store.count_tokens().await? > 0 {
            return Ok(None);
        }
        let secret = match preset {
            Some(s) if s.starts_with(TOKEN_PREFIX) && s.len() >= 24 => s,
            Some(_) => {
                return Err(AppError::invalid(format!(
                    "the configured admin token must start with {TOKEN_PREFIX} and be at least 24 characters"
                )))
            }
            None => new_token_secret(),
        };
        let now = self.now();
        let info = ApiToken {
            id: Uuid::now_v7(),
            tenant_id: None,
            name: "bootstrap vendor admin".into(),
            role: Role::VendorAdmin,
            prefix: secret.chars().take(12).collect(),
            created_at: now,
            revoked_at: None,
        };
        let ctx = Ctx::system("bootstrap");
        let audit = ctx.audit(now, None, "token.create", Some(info.id.to_string()), json!({"role": "vendor-admin"}));
        persist(&secret)?;
        self.store.create_token(info, hash_secret(&secret), audit).await?;
        Ok(Some(secret))
    }

    // Tenants -----------------------------------------------------------------------------------------------

    pub async fn create_tenant(&self, ctx: &Ctx, req: CreateTenant) -> AppResult<Tenant> {
        ctx.require_vendor()?;
        let now = self.now();
        let t = Tenant { id: Uuid::now_v7(), name: check_name("name", &req.name)?, created_at: now };
        let audit = ctx.audit(now, Some(t.id), "tenant.create", Some(t.id.to_string()), json!({"name": t.name}));
        self.store.create_tenant(t.clone(), audit).await.map_err(|e| AppError::store("tenant", e))?;
        Ok(t)
    }

    pub async fn get_tenant(&self, ctx: &Ctx, id: Uuid) -> AppResult<Tenant> {
        if let Some(own) = ctx.scope()? {
            if own != id {
                return Err(AppError::not_found("tenant"));
            }
        }
        self.store.get_tenant(id).await.map_err(|e| AppError::store("tenant", e))
    }

    pub async fn list_tenants(&self, ctx: &Ctx, q: PageQuery) -> AppResult<Page<Tenant>> {
        let page = q.to_request()?;
        match ctx.scope()? {
            None => Ok(self.store.list_tenants(page).await?),
            Some(own) => {
                let t = self.store.get_tenant(own).await?;
                Ok(Page { items: vec![t], next_cursor: None })
            }
        }
    }

    // Tokens ------------------------------------------------------------------------------------------------

    pub async fn create_token(&self, ctx: &Ctx, req: CreateToken) -> AppResult<CreatedToken> {
        ctx.require_admin()?;
        let name = check_name("name", &req.name)?;
        if name.to_lowercase().starts_with(super::users::USER_TOKEN_PREFIX) {
            return Err(AppError::invalid(format!(
                "token names starting with \"{}\" are kept for console users' own tokens: choose another name",
                super::users::USER_TOKEN_PREFIX
            )));
        }
        let tenant_id = match req.role {
            Role::VendorAdmin => {
                ctx.require_vendor()?;
                if req.tenant_id.is_some() {
                    return Err(AppError::invalid("a vendor-admin token belongs to no tenant: omit tenant_id"));
                }
                None
            }
            _ => {
                let t = ctx.tenant_for_create(req.tenant_id)?;
                self.store.get_tenant(t).await.map_err(|e| AppError::store("tenant", e))?;
                Some(t)
            }
        };
        let secret = new_token_secret();
        let now = self.now();
        let info = ApiToken {
            id: Uuid::now_v7(),
            tenant_id,
            name,
            role: req.role,
            prefix: secret.chars().take(12).collect(),
            created_at: now,
            revoked_at: None,
        };
        let audit = ctx.audit(
            now,
            tenant_id,
            "token.create",
            Some(info.id.to_string()),
            json!({"role": req.role.as_str(), "name": info.name}),
        );
        self.store.create_token(info.clone(), hash_secret(&secret), audit).await?;
        Ok(CreatedToken { token: secret, info })
    }

    pub async fn list_tokens(&self, ctx: &Ctx) -> AppResult<Vec<ApiToken>> {
        ctx.require_admin()?;
        Ok(self.store.list_tokens(ctx.scope()?).await?)
    }

    pub async fn revoke_token(&self, ctx: &Ctx, id: Uuid) -> AppResult<()> {
        ctx.require_admin()?;
        let now = self.now();
        let scope = ctx.scope()?;
        let audit = ctx.audit(now, scope, "token.revoke", Some(id.to_string()), json!({}));
        self.store.revoke_token(scope, id, now, audit).await.map_err(|e| AppError::store("token", e))
    }

    // Customers ---------------------------------------------------------------------------------------------

    pub async fn create_customer(&self, ctx: &Ctx, req: CreateCustomer) -> AppResult<Customer> {
        ctx.require_admin()?;
        let tenant_id = ctx.tenant_for_create(req.tenant_id)?;
        self.store.get_tenant(tenant_id).await.map_err(|e| AppError::store("tenant", e))?;
        let now = self.now();
        let c = Customer {
            id: Uuid::now_v7(),
            tenant_id,
            name: check_name("name", &req.name)?,
            email: req.email.as_deref().map(check_email).transpose()?,
            metadata: check_metadata(req.metadata)?,
            created_at: now,
            updated_at: now,
        };
        let audit = ctx.audit(now, Some(tenant_id), "customer.create", Some(c.id.to_string()), json!({"name": c.name}));
        self.store.put_customer(c.clone(), true, audit).await.map_err(|e| AppError::store("customer", e))?;
        Ok(c)
    }

    pub async fn get_customer(&self, ctx: &Ctx, id: Uuid) -> AppResult<Customer> {
        self.store.get_customer(ctx.scope()?, id).await.map_err(|e| AppError::store("customer", e))
    }

    pub async fn list_customers(&self, ctx: &Ctx, q: PageQuery) -> AppResult<Page<Customer>> {
        Ok(self.store.list_customers(ctx.scope()?, q.to_request()?).await?)
    }

    pub async fn update_customer(&self, ctx: &Ctx, id: Uuid, req: UpdateCustomer) -> AppResult<Customer> {
        ctx.require_admin()?;
        let mut c = self.get_customer(ctx, id).await?;
        if let Some(n) = req.name {
            c.name = check_name("name", &n)?;
        }
        if let Some(e) = req.email {
            c.email = Some(check_email(&e)?);
        }
        if req.metadata.is_some() {
            c.metadata = check_metadata(req.metadata)?;
        }
        let now = self.now();
        c.updated_at = now;
        let audit = ctx.audit(now, Some(c.tenant_id), "customer.update", Some(id.to_string()), json!({}));
        self.store.put_customer(c.clone(), false, audit).await.map_err(|e| AppError::store("customer", e))?;
        Ok(c)
    }

    // Products ----------------------------------------------------------------------------------------------

    pub async fn create_product(&self, ctx: &Ctx, req: CreateProduct) -> AppResult<Product> {
        ctx.require_admin()?;
        let tenant_id = ctx.tenant_for_create(req.tenant_id)?;
        self.store.get_tenant(tenant_id).await.map_err(|e| AppError::store("tenant", e))?;
        let name = check_name("name", &req.name)?;
        let code = match req.code {
            Some(c) => check_code(&c)?,
            None => slug(&name, "product"),
        };
        if req.id.is_some_and(|id| id.is_nil() || id.is_max()) {
            return Err(AppError::invalid("id must be a UUID other than the nil and max UUIDs (or left out)"));
        }
        let now = self.now();
        let p = Product {
            id: req.id.unwrap_or_else(Uuid::now_v7),
            tenant_id,
            name,
            code,
            metadata: check_metadata(req.metadata)?,
            created_at: now,
            updated_at: now,
        };
        let audit = ctx.audit(now, Some(tenant_id), "product.create", Some(p.id.to_string()), json!({"code": p.code}));
        self.store.put_product(p.clone(), true, audit).await.map_err(|e| match e {
            crate::store::StoreError::Conflict(m) if req.id.is_some() && m.contains("products.id") => {
                AppError::new(ErrorCode::ProductIdTaken, format!("a product with id {} exists already", p.id))
            }
            crate::store::StoreError::Conflict(_) => AppError::new(
                ErrorCode::ProductCodeTaken,
                format!("a product with code {:?} exists already: choose another code", p.code),
            ),
            e => AppError::store("product", e),
        })?;
        Ok(p)
    }

    pub async fn get_product(&self, ctx: &Ctx, id: Uuid) -> AppResult<Product> {
        self.store.get_product(ctx.scope()?, id).await.map_err(|e| AppError::store("product", e))
    }

    pub async fn list_products(&self, ctx: &Ctx, q: PageQuery) -> AppResult<Page<Product>> {
        Ok(self.store.list_products(ctx.scope()?, q.to_request()?).await?)
    }

    pub async fn update_product(&self, ctx: &Ctx, id: Uuid, req: UpdateProduct) -> AppResult<Product> {
        ctx.require_admin()?;
        let mut p = self.get_product(ctx, id).await?;
        if let Some(n) = req.name {
            p.name = check_name("name", &n)?;
        }
        if let Some(c) = req.code {
            p.code = check_code(&c)?;
        }
        if req.metadata.is_some() {
            p.metadata = check_metadata(req.metadata)?;
        }
        let now = self.now();
        p.updated_at = now;
        let audit = ctx.audit(now, Some(p.tenant_id), "product.update", Some(id.to_string()), json!({}));
        self.store.put_product(p.clone(), false, audit).await.map_err(|e| AppError::store("product", e))?;
        Ok(p)
    }

    // Templates ---------------------------------------------------------------------------------------------

    /// Creates a template from a JSON body with the fields of `tessera_core::Template` (product_id, name and
    /// license_type required; the rest default).
    pub async fn create_template(&self, ctx: &Ctx, body: Value) -> AppResult<TemplateRecord> {
        ctx.require_admin()?;
        reject_fields(&body, &["id", "tenant_id", "created_at", "updated_at"])?;
        super::only_fields(&body, TEMPLATE_FIELDS, "template")?;
        let product_id = body
            .get("product_id")
            .and_then(Value::as_str)
            .and_then(|s| Uuid::parse_str(s).ok())
            .ok_or_else(|| AppError::invalid("product_id (a product's uuid) is required"))?;
        let product = self.get_product(ctx, product_id).await?;
        let mut base = json!({
            "id": Uuid::now_v7(),
            "tenant_id": product.tenant_id,
            "license_model": "PER_DEVICE",
            "max_activations": 1,
        });
        merge_patch(&mut base, &body);
        let mut template: Template =
            serde_json::from_value(base).map_err(|e| AppError::invalid(format!("template is not valid: {e}")))?;
        validate_template(&mut template)?;
        let now = self.now();
        let rec = TemplateRecord { template, created_at: now, updated_at: now };
        let audit = ctx.audit(
            now,
            Some(product.tenant_id),
            "template.create",
            Some(rec.template.id.to_string()),
            json!({"name": rec.template.name}),
        );
        self.store.put_template(rec.clone(), true, audit).await.map_err(|e| AppError::store("template", e))?;
        Ok(rec)
    }

    pub async fn get_template(&self, ctx: &Ctx, id: Uuid) -> AppResult<TemplateRecord> {
        self.store.get_template(ctx.scope()?, id).await.map_err(|e| AppError::store("template", e))
    }

    pub async fn list_templates(&self, ctx: &Ctx, q: PageQuery) -> AppResult<Page<TemplateRecord>> {
        Ok(self.store.list_templates(ctx.scope()?, q.to_request()?).await?)
    }

    /// Applies a JSON merge patch to a template.
    pub async fn update_template(&self, ctx: &Ctx, id: Uuid, patch: Value) -> AppResult<TemplateRecord> {
        ctx.require_admin()?;
        reject_fields(&patch, &["id", "tenant_id", "created_at", "updated_at"])?;
        super::only_fields(&patch, TEMPLATE_FIELDS, "template")?;
        let mut rec = self.get_template(ctx, id).await?;
        if let Some(p) = patch.get("product_id") {
            let pid = p
                .as_str()
                .and_then(|s| Uuid::parse_str(s).ok())
                .ok_or_else(|| AppError::invalid("product_id must be a uuid"))?;
            let prod = self.get_product(ctx, pid).await?;
            if prod.tenant_id != rec.template.tenant_id {
                return Err(AppError::not_found("product"));
            }
        }
        let mut v = serde_json::to_value(&rec.template).map_err(|e| AppError::internal("template", e))?;
        merge_patch(&mut v, &patch);
        let mut template: Template =
            serde_json::from_value(v).map_err(|e| AppError::invalid(format!("template is not valid: {e}")))?;
        validate_template(&mut template)?;
        let now = self.now();
        rec.template = template;
        rec.updated_at = now;
        let audit = ctx.audit(now, Some(rec.template.tenant_id), "template.update", Some(id.to_string()), patch);
        self.store.put_template(rec.clone(), false, audit).await.map_err(|e| AppError::store("template", e))?;
        Ok(rec)
    }

    pub async fn duplicate_template(&self, ctx: &Ctx, id: Uuid, req: DuplicateTemplate) -> AppResult<TemplateRecord> {
        ctx.require_admin()?;
        let src = self.get_template(ctx, id).await?;
        let mut t = src.template.clone();
        t.id = Uuid::now_v7();
        t.name = match req.name {
            Some(n) => check_name("name", &n)?,
            None => format!("{} (copy)", t.name).chars().take(200).collect(),
        };
        let now = self.now();
        let rec = TemplateRecord { template: t, created_at: now, updated_at: now };
        let audit = ctx.audit(
            now,
            Some(rec.template.tenant_id),
            "template.duplicate",
            Some(rec.template.id.to_string()),
            json!({"from": id}),
        );
        self.store.put_template(rec.clone(), true, audit).await.map_err(|e| AppError::store("template", e))?;
        Ok(rec)
    }

    pub async fn delete_template(&self, ctx: &Ctx, id: Uuid) -> AppResult<()> {
        ctx.require_admin()?;
        let rec = self.get_template(ctx, id).await?;
        let audit =
            ctx.audit(self.now(), Some(rec.template.tenant_id), "template.delete", Some(id.to_string()), json!({}));
        self.store.delete_template(ctx.scope()?, id, audit).await.map_err(|e| AppError::store("template", e))
    }
}
