//! Tenants, API tokens, customers, products and templates ([`AdminStore`]).

use chrono::{DateTime, Utc};
use rusqlite::{params, Connection, OptionalExtension};
use uuid::Uuid;

use super::audit::append_audit_tx;
use super::rows::*;
use super::SqliteStore;
use crate::store::*;
use crate::time::ts;

fn insert_token(c: &Connection, t: &ApiToken, hash: [u8; 32]) -> Result<(), StoreError> {
    c.prepare_cached(&format!("INSERT INTO api_tokens ({TOKEN_COLS}) VALUES (?1,?2,?3,?4,?5,?6,?7,?8)"))?.execute(
        params![
            t.id.to_string(),
            s_uuid(t.tenant_id),
            t.name,
            t.role.as_str(),
            t.prefix,
            ts(t.created_at),
            s_time(t.revoked_at),
            hash.to_vec()
        ],
    )?;
    Ok(())
}

/// Inserts (`create`) a row of `table` whose parameters are `id, tenant_id, cols…`, or replaces the row with that
/// id in that tenant: `NotFound` when there is none (an id of another tenant is not replaced).
pub(super) fn put_row(
    c: &Connection,
    table: &str,
    cols: &[&str],
    p: &[&dyn rusqlite::ToSql],
    create: bool,
) -> Result<(), StoreError> {
    let sql = if create {
        let marks: Vec<String> = (1..=cols.len() + 2).map(|i| format!("?{i}")).collect();
        format!("INSERT INTO {table} (id, tenant_id, {}) VALUES ({})", cols.join(", "), marks.join(","))
    } else {
        let sets: Vec<String> = cols.iter().zip(3..).map(|(c, i)| format!("{c} = ?{i}")).collect();
        format!("UPDATE {table} SET {} WHERE id = ?1 AND tenant_id = ?2", sets.join(", "))
    };
    match c.prepare_cached(&sql)?.execute(p)? {
        0 => Err(StoreError::NotFound),
        _ => Ok(()),
    }
}

impl AdminStore for SqliteStore {
    fn ping(&self) -> StoreFuture<'_, ()> {
        self.read(|c| {
            c.query_row("SELECT 1", [], |_| Ok(()))?;
            Ok(())
        })
    }

    fn create_tenant(&self, t: Tenant, audit: NewAudit) -> StoreFuture<'_, ()> {
        self.write(move |c| {
            c.prepare_cached("INSERT INTO tenants (id, name, created_at) VALUES (?1, ?2, ?3)")?.execute(params![
                t.id.to_string(),
                t.name,
                ts(t.created_at)
            ])?;
            append_audit_tx(c, &audit)
        })
    }

    fn get_tenant(&self, id: Uuid) -> StoreFuture<'_, Tenant> {
        self.read(move |c| {
            let sql = format!("SELECT {TENANT_COLS} FROM tenants WHERE id = ?1");
            Ok(c.prepare_cached(&sql)?.query_row([id.to_string()], row_tenant)?)
        })
    }

    fn list_tenants(&self, page: PageRequest) -> StoreFuture<'_, Page<Tenant>> {
        self.read(move |c| {
            let sql = format!("SELECT {TENANT_COLS} FROM tenants WHERE (?1 IS NULL OR id > ?1) ORDER BY id LIMIT ?2");
            let items = c
                .prepare_cached(&sql)?
                .query_map(params![s_uuid(page.after), i64::from(page.limit) + 1], row_tenant)?
                .collect::<Result<Vec<_>, _>>()?;
            Ok(paginate(items, page.limit, |t| t.id))
        })
    }

    fn create_token(&self, t: ApiToken, hash: [u8; 32], audit: NewAudit) -> StoreFuture<'_, ()> {
        self.write(move |c| {
            insert_token(c, &t, hash)?;
            append_audit_tx(c, &audit)
        })
    }

    fn find_token(&self, hash: [u8; 32]) -> StoreFuture<'_, Option<(ApiToken, [u8; 32])>> {
        self.read(move |c| {
            let sql = format!("SELECT {TOKEN_COLS} FROM api_tokens WHERE token_hash = ?1");
            Ok(c.prepare_cached(&sql)?
                .query_row([hash.to_vec()], |r| Ok((row_token(r)?, g_arr::<32>(r, 7)?)))
                .optional()?)
        })
    }

    fn list_tokens(&self, scope: Scope) -> StoreFuture<'_, Vec<ApiToken>> {
        self.read(move |c| {
            let sql = format!("SELECT {TOKEN_COLS} FROM api_tokens WHERE (?1 IS NULL OR tenant_id = ?1) ORDER BY id");
            Ok(c.prepare_cached(&sql)?.query_map([scope_s(scope)], row_token)?.collect::<Result<Vec<_>, _>>()?)
        })
    }

    fn revoke_token(&self, scope: Scope, id: Uuid, at: DateTime<Utc>, audit: NewAudit) -> StoreFuture<'_, ()> {
        self.write(move |c| {
            let n = c
                .prepare_cached(
                    "UPDATE api_tokens SET revoked_at = COALESCE(revoked_at, ?3)
                     WHERE id = ?1 AND (?2 IS NULL OR tenant_id = ?2)",
                )?
                .execute(params![id.to_string(), scope_s(scope), ts(at)])?;
            if n == 0 {
                return Err(StoreError::NotFound);
            }
            append_audit_tx(c, &audit)
        })
    }

    fn count_tokens(&self) -> StoreFuture<'_, u64> {
        self.read(|c| {
            let n: i64 = c.query_row("SELECT COUNT(*) FROM api_tokens", [], |r| r.get(0))?;
            Ok(n.max(0) as u64)
        })
    }

    fn create_console_user(&self, u: ConsoleUser, t: ApiToken, hash: [u8; 32], audit: NewAudit) -> StoreFuture<'_, ()> {
        self.write(move |c| {
            insert_token(c, &t, hash)?;
            c.prepare_cached(&format!(
                "INSERT INTO console_users ({CONSOLE_USER_COLS}) VALUES (?1,?2,?3,?4,?5,?6,?7)"
            ))?
            .execute(params![
                u.id.to_string(),
                s_uuid(u.tenant_id),
                u.username,
                u.password_hash,
                u.token_id.to_string(),
                ts(u.created_at),
                ts(u.password_changed_at)
            ])?;
            append_audit_tx(c, &audit)
        })
    }

    fn find_console_user(&self, username: String) -> StoreFuture<'_, Option<(ConsoleUser, [u8; 32])>> {
        self.read(move |c| {
            let cols = CONSOLE_USER_COLS.split(", ").map(|k| format!("u.{k}")).collect::<Vec<_>>().join(", ");
            let sql = format!(
                "SELECT {cols}, t.token_hash FROM console_users u JOIN api_tokens t ON t.id = u.token_id
                 WHERE u.username = ?1"
            );
            Ok(c.prepare_cached(&sql)?
                .query_row([username], |r| Ok((row_console_user(r)?, g_arr::<32>(r, 7)?)))
                .optional()?)
        })
    }

    fn list_console_users(&self, scope: Scope) -> StoreFuture<'_, Vec<(ConsoleUser, ApiToken)>> {
        self.read(move |c| {
            let ucols = CONSOLE_USER_COLS.split(", ").map(|k| format!("u.{k}")).collect::<Vec<_>>().join(", ");
            let tcols = TOKEN_COLS.split(", ").map(|k| format!("t.{k}")).collect::<Vec<_>>().join(", ");
            let sql = format!(
                "SELECT {ucols}, {tcols} FROM console_users u JOIN api_tokens t ON t.id = u.token_id
                 WHERE (?1 IS NULL OR u.tenant_id = ?1) ORDER BY u.id"
            );
            let mut stmt = c.prepare_cached(&sql)?;
            // The token's columns follow the user's seven.
            let rows = stmt.query_map([scope_s(scope)], |r| Ok((row_console_user(r)?, row_token_at(r, 7)?)))?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
    }

    fn set_console_password(
        &self,
        scope: Scope,
        id: Uuid,
        password_hash: String,
        token: ApiToken,
        token_hash: [u8; 32],
        at: DateTime<Utc>,
        audit: NewAudit,
    ) -> StoreFuture<'_, ()> {
        self.write(move |c| {
            let old: Option<String> = c
                .prepare_cached("SELECT token_id FROM console_users WHERE id = ?1 AND (?2 IS NULL OR tenant_id = ?2)")?
                .query_row(params![id.to_string(), scope_s(scope)], |r| r.get(0))
                .optional()?;
            let Some(old) = old else {
                return Err(StoreError::NotFound);
            };
            insert_token(c, &token, token_hash)?;
            c.prepare_cached("UPDATE api_tokens SET revoked_at = COALESCE(revoked_at, ?2) WHERE id = ?1")?
                .execute(params![old, ts(at)])?;
            c.prepare_cached(
                "UPDATE console_users SET password_hash = ?2, password_changed_at = ?3, token_id = ?4 WHERE id = ?1",
            )?
            .execute(params![id.to_string(), password_hash, ts(at), token.id.to_string()])?;
            append_audit_tx(c, &audit)
        })
    }

    fn put_customer(&self, x: Customer, create: bool, audit: NewAudit) -> StoreFuture<'_, ()> {
        self.write(move |c| {
            let p = params![
                x.id.to_string(),
                x.tenant_id.to_string(),
                x.name,
                x.email,
                json(&x.metadata)?,
                ts(x.created_at),
                ts(x.updated_at)
            ];
            put_row(c, "customers", &["name", "email", "metadata", "created_at", "updated_at"], p, create)?;
            append_audit_tx(c, &audit)
        })
    }

    fn get_customer(&self, scope: Scope, id: Uuid) -> StoreFuture<'_, Customer> {
        self.read(move |c| get_scoped(c, "customers", CUSTOMER_COLS, scope, id, row_customer))
    }

    fn list_customers(&self, scope: Scope, page: PageRequest) -> StoreFuture<'_, Page<Customer>> {
        self.read(move |c| list_scoped(c, "customers", CUSTOMER_COLS, scope, page, row_customer, |x| x.id))
    }

    fn put_product(&self, x: Product, create: bool, audit: NewAudit) -> StoreFuture<'_, ()> {
        self.write(move |c| {
            let p = params![
                x.id.to_string(),
                x.tenant_id.to_string(),
                x.name,
                x.code,
                json(&x.metadata)?,
                ts(x.created_at),
                ts(x.updated_at)
            ];
            put_row(c, "products", &["name", "code", "metadata", "created_at", "updated_at"], p, create)?;
            append_audit_tx(c, &audit)
        })
    }

    fn get_product(&self, scope: Scope, id: Uuid) -> StoreFuture<'_, Product> {
        self.read(move |c| get_scoped(c, "products", PRODUCT_COLS, scope, id, row_product))
    }

    fn list_products(&self, scope: Scope, page: PageRequest) -> StoreFuture<'_, Page<Product>> {
        self.read(move |c| list_scoped(c, "products", PRODUCT_COLS, scope, page, row_product, |x| x.id))
    }

    fn put_template(&self, t: TemplateRecord, create: bool, audit: NewAudit) -> StoreFuture<'_, ()> {
        self.write(move |c| {
            let tpl = &t.template;
            let p = params![
                tpl.id.to_string(),
                tpl.tenant_id.to_string(),
                tpl.product_id.to_string(),
                tpl.name,
                json(tpl)?,
                ts(t.created_at),
                ts(t.updated_at)
            ];
            put_row(c, "templates", &["product_id", "name", "body", "created_at", "updated_at"], p, create)?;
            append_audit_tx(c, &audit)
        })
    }

    fn get_template(&self, scope: Scope, id: Uuid) -> StoreFuture<'_, TemplateRecord> {
        self.read(move |c| get_scoped(c, "templates", TEMPLATE_COLS, scope, id, row_template))
    }

    fn list_templates(&self, scope: Scope, page: PageRequest) -> StoreFuture<'_, Page<TemplateRecord>> {
        self.read(move |c| list_scoped(c, "templates", TEMPLATE_COLS, scope, page, row_template, |x| x.template.id))
    }

    fn delete_template(&self, scope: Scope, id: Uuid, audit: NewAudit) -> StoreFuture<'_, ()> {
        self.write(move |c| {
            let n = c
                .prepare_cached("DELETE FROM templates WHERE id = ?1 AND (?2 IS NULL OR tenant_id = ?2)")?
                .execute(params![id.to_string(), scope_s(scope)])?;
            if n == 0 {
                return Err(StoreError::NotFound);
            }
            append_audit_tx(c, &audit)
        })
    }
}
