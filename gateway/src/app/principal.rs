//! The verified caller of an RPC: organisation (from the certificate), person and role (from the
//! token). Built once per call by the authentication layer and handed to handlers as a typed
//! request extension.

use casegate_consent::{OrgNumber, Role, SubjectId};
use tonic::{Request, Status};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// The calling organisation: the certificate's orgnr, which the token's `org` matched.
    pub orgnr: OrgNumber,
    /// The token's `sub`: the person's id at their organisation's identity provider.
    pub user_id: String,
    pub role: Role,
    /// The token's `iss`.
    pub issuer: String,
    /// The jobseeker's own identity number, when the token carries one (`pid`).
    pub pid: Option<SubjectId>,
    /// SHA-256 of the client certificate the call came over.
    pub cert_sha256: [u8; 32],
    /// Whether the token was bound to that certificate (RFC 8705 `cnf.x5t#S256`).
    pub certificate_bound: bool,
    /// The upstream login a backend-for-frontend vouched for (the token's `idp` and `acr`),
    /// recorded with the audit entries this caller causes.
    pub login: Option<casegate_audit::entry::Login>,
}

impl Principal {
    /// The caller of `request`, as the authentication layer verified it.
    ///
    /// Every `casegate.v1` service sits behind that layer, so a missing principal is a wiring
    /// bug, answered as `INTERNAL` rather than served unauthenticated.
    pub fn of<T>(request: &Request<T>) -> Result<&Principal, Status> {
        request.extensions().get::<Principal>().ok_or_else(|| {
            tracing::error!("request reached a handler without an authenticated principal");
            Status::internal("internal error")
        })
    }

    /// Refuses callers whose role is not among `allowed`.
    pub fn require_role(&self, allowed: &[Role]) -> Result<(), Status> {
        if allowed.contains(&self.role) {
            Ok(())
        } else {
            let names: Vec<&str> = allowed.iter().map(|r| r.as_str()).collect();
            Err(Status::permission_denied(format!(
                "role {} may not call this; allowed: {}",
                self.role,
                names.join(", ")
            )))
        }
    }
}
