//! Console users: people who sign in to the console with a username and a password instead of an API token.
//! Each has an API token of its own whose secret is made and dropped at once (nobody holds it): the user's role,
//! tenant and revocation are that token's, and a console session keeps the token's hash, so revoking the user
//! (or its token) ends its sessions at the next page. Passwords are hashed with argon2id (the crate's defaults:
//! 19 MiB, two passes) on the blocking pool.

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use chrono::{DateTime, Utc};
use rand_core::OsRng;
use serde::{Deserialize, Serialize};
use serde_json::json;
use std::sync::LazyLock;
use uuid::Uuid;

use super::{Ctx, Services};
use crate::error::{AppError, AppResult};
use crate::store::{ApiToken, ConsoleUser, Role};
use tessera_core::license_key::hash_secret;

/// Passwords are at least this long (a passphrase of a few words is the expected shape).
pub const MIN_PASSWORD: usize = 12;
const MAX_PASSWORD: usize = 200;

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateConsoleUser {
    pub username: String,
    pub password: String,
    pub role: Role,
    #[serde(default)]
    pub tenant_id: Option<Uuid>,
}

/// A new password for a console user.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewPassword {
    pub password: String,
}

/// A console user as listed: never its password hash.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct ConsoleUserView {
    pub id: Uuid,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tenant_id: Option<Uuid>,
    pub username: String,
    pub role: Role,
    pub token_id: Uuid,
    pub created_at: DateTime<Utc>,
    pub password_changed_at: DateTime<Utc>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub revoked_at: Option<DateTime<Utc>>,
}

/// A signed-in console user: who (for the audit log) and the hash of its token (for the session).
pub struct PasswordSignIn {
    pub username: String,
    pub token_hash: [u8; 32],
}

/// A username: 3 to 64 of `a-z 0-9 . _ @ -`, compared without case (kept in lower case).
pub fn check_username(v: &str) -> AppResult<String> {
    let u = v.trim().to_lowercase();
    let ok = (3..=64).contains(&u.len())
        && u.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '_' | '@' | '-'));
    if !ok {
        return Err(AppError::invalid(
            "username must be 3 to 64 characters of letters, digits and . _ @ - (an email address works)",
        ));
    }
    Ok(u)
}

fn check_password(password: &str, username: &str) -> AppResult<()> {
    let n = password.chars().count();
    if n < MIN_PASSWORD {
        return Err(AppError::invalid(format!(
            "password must be at least {MIN_PASSWORD} characters (a few words work well)"
        )));
    }
    if n > MAX_PASSWORD {
        return Err(AppError::invalid(format!("password must be at most {MAX_PASSWORD} characters")));
    }
    if password.trim().to_lowercase() == username {
        return Err(AppError::invalid("password must not be the username"));
    }
    Ok(())
}

/// At most this many argon2 runs at once (one a core): a flood of sign-ins queues here instead of filling the
/// blocking pool with 19 MiB jobs.
static ARGON2_JOBS: LazyLock<tokio::sync::Semaphore> = LazyLock::new(|| {
    tokio::sync::Semaphore::new(std::thread::available_parallelism().map_or(2, std::num::NonZeroUsize::get))
});

async fn hash_password(password: String) -> AppResult<String> {
    let _job = ARGON2_JOBS.acquire().await.map_err(|e| AppError::internal("password hashing", e))?;
    tokio::task::spawn_blocking(move || {
        let salt = SaltString::generate(&mut OsRng);
        Argon2::default().hash_password(password.as_bytes(), &salt).map(|h| h.to_string())
    })
    .await
    .map_err(|e| AppError::internal("password hashing", e))?
    .map_err(|e| AppError::internal("password hashing", e))
}

async fn password_matches(password: String, stored: Option<String>) -> bool {
    let Ok(_job) = ARGON2_JOBS.acquire().await else {
        return false;
    };
    tokio::task::spawn_blocking(move || {
        match stored {
            Some(phc) => PasswordHash::new(&phc)
                .map(|h| Argon2::default().verify_password(password.as_bytes(), &h).is_ok())
                .unwrap_or(false),
            None => {
                // An unknown user costs what a wrong password does (one argon2 run with the same parameters), so
                // the time to refuse tells nothing about which usernames exist.
                let salt = SaltString::generate(&mut OsRng);
                let _ = Argon2::default().hash_password(password.as_bytes(), &salt);
                false
            }
        }
    })
    .await
    .unwrap_or(false)
}

fn refuse() -> AppError {
    AppError::unauthorized("the username or password is not right (or the user was revoked): check both and retry")
}

impl Services {
    pub async fn create_console_user(&self, ctx: &Ctx, req: CreateConsoleUser) -> AppResult<ConsoleUserView> {
        ctx.require_admin()?;
        let username = check_username(&req.username)?;
        check_password(&req.password, &username)?;
        let tenant_id = match req.role {
            Role::VendorAdmin => {
                ctx.require_vendor()?;
                if req.tenant_id.is_some() {
                    return Err(AppError::invalid("a vendor-admin user belongs to no tenant: leave the tenant empty"));
                }
                None
            }
            _ => {
                let t = ctx.tenant_for_create(req.tenant_id)?;
                self.store.get_tenant(t).await.map_err(|e| AppError::store("tenant", e))?;
                Some(t)
            }
        };
        let password_hash = hash_password(req.password).await?;
        let now = self.now();
        let (token, token_hash) = user_token(&username, req.role, tenant_id, now);
        let user = ConsoleUser {
            id: Uuid::now_v7(),
            tenant_id,
            username: username.clone(),
            password_hash,
            token_id: token.id,
            created_at: now,
            password_changed_at: now,
        };
        let audit = ctx.audit(
            now,
            tenant_id,
            "console_user.create",
            Some(user.id.to_string()),
            json!({"username": username, "role": req.role.as_str(), "token_id": token.id}),
        );
        let view = view(&user, &token);
        self.store.create_console_user(user, token, token_hash, audit).await.map_err(|e| match e {
            crate::store::StoreError::Conflict(_) => {
                AppError::new(tessera_core::protocol::ErrorCode::Conflict, "this username is taken: choose another")
            }
            e => AppError::store("console user", e),
        })?;
        Ok(view)
    }

    pub async fn list_console_users(&self, ctx: &Ctx) -> AppResult<Vec<ConsoleUserView>> {
        ctx.require_admin()?;
        Ok(self.store.list_console_users(ctx.scope()?).await?.iter().map(|(u, t)| view(u, t)).collect())
    }

    /// Sets a new password (an admin resets it for the user). The user gets a new token and the old one is
    /// revoked in the same write, so every session signed in with the old password ends at its next page.
    pub async fn set_console_password(&self, ctx: &Ctx, id: Uuid, password: String) -> AppResult<()> {
        ctx.require_admin()?;
        let scope = ctx.scope()?;
        let users = self.store.list_console_users(scope).await?;
        let (user, old) = users.iter().find(|(u, _)| u.id == id).ok_or_else(|| AppError::not_found("console user"))?;
        if old.revoked_at.is_some() {
            return Err(AppError::invalid("this user is revoked: create a new user instead"));
        }
        if old.role == Role::VendorAdmin {
            ctx.require_vendor()?;
        }
        check_password(&password, &user.username)?;
        let hash = hash_password(password).await?;
        let now = self.now();
        let (token, token_hash) = user_token(&user.username, old.role, user.tenant_id, now);
        let audit = ctx.audit(
            now,
            user.tenant_id,
            "console_user.password",
            Some(id.to_string()),
            json!({"username": user.username, "token_id": token.id, "revoked_token_id": old.id}),
        );
        self.store
            .set_console_password(scope, id, hash, token, token_hash, now, audit)
            .await
            .map_err(|e| AppError::store("console user", e))
    }

    /// Revokes a console user: its token is revoked, so its sessions end at their next page.
    pub async fn revoke_console_user(&self, ctx: &Ctx, id: Uuid) -> AppResult<()> {
        ctx.require_admin()?;
        let scope = ctx.scope()?;
        let users = self.store.list_console_users(scope).await?;
        let (user, token) =
            users.iter().find(|(u, _)| u.id == id).ok_or_else(|| AppError::not_found("console user"))?;
        if token.role == Role::VendorAdmin {
            ctx.require_vendor()?;
        }
        let now = self.now();
        let audit = ctx.audit(
            now,
            user.tenant_id,
            "console_user.revoke",
            Some(id.to_string()),
            json!({"username": user.username, "token_id": token.id}),
        );
        self.store.revoke_token(scope, token.id, now, audit).await.map_err(|e| AppError::store("console user", e))
    }

    /// Checks a username and password. Unknown users, wrong passwords and revoked users are refused alike, and
    /// in about the same time.
    pub async fn sign_in_password(&self, username: &str, password: &str) -> AppResult<PasswordSignIn> {
        if password.chars().count() > MAX_PASSWORD {
            return Err(refuse());
        }
        let found = match check_username(username) {
            Ok(u) => self.store.find_console_user(u).await?,
            Err(_) => None,
        };
        let stored = found.as_ref().map(|(u, _)| u.password_hash.clone());
        if !password_matches(password.to_string(), stored).await {
            return Err(refuse());
        }
        let Some((user, token_hash)) = found else {
            return Err(refuse());
        };
        // Revoked (its token) is refused like a wrong password.
        self.principal_for_token_hash(token_hash).await.map_err(|_| refuse())?;
        Ok(PasswordSignIn { username: user.username, token_hash })
    }
}

/// The prefix that marks a console user's token in the token list (API tokens' own begin `tsa_`).
pub const USER_TOKEN_PREFIX: &str = "console user";

/// A console user's own token: a fresh secret, hashed and dropped (nobody holds it), and its hash.
fn user_token(username: &str, role: Role, tenant_id: Option<Uuid>, now: DateTime<Utc>) -> (ApiToken, [u8; 32]) {
    let mut secret = [0u8; 32];
    rand_core::RngCore::fill_bytes(&mut OsRng, &mut secret);
    let token = ApiToken {
        id: Uuid::now_v7(),
        tenant_id,
        name: format!("{USER_TOKEN_PREFIX} {username}"),
        role,
        prefix: USER_TOKEN_PREFIX.into(),
        created_at: now,
        revoked_at: None,
    };
    (token, hash_secret(&hex::encode(secret)))
}

fn view(u: &ConsoleUser, t: &ApiToken) -> ConsoleUserView {
    ConsoleUserView {
        id: u.id,
        tenant_id: u.tenant_id,
        username: u.username.clone(),
        role: t.role,
        token_id: t.id,
        created_at: u.created_at,
        password_changed_at: u.password_changed_at,
        revoked_at: t.revoked_at,
    }
}
