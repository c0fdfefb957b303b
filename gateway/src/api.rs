//! The `casegate.v1` gRPC services. Each handler starts from the authenticated [`Principal`],
//! parses and authorises, and leaves deciding, storing and logging to the [`Backend`] it was
//! given: the embedded stores ([`Embedded`]) or a shared database (`crate::store`).
//!
//! [`Backend`]: backend::Backend
//! [`Embedded`]: embedded::Embedded
//!
//! [`Principal`]: crate::app::principal::Principal

pub(crate) mod audit;
pub(crate) mod backend;
mod consent;
pub(crate) mod disclosure;
pub(crate) mod embedded;

use std::pin::Pin;

use futures_util::Stream;
use tonic::Status;

pub(crate) use audit::AuditApi;
pub(crate) use consent::ConsentApi;
pub(crate) use disclosure::DisclosureApi;

/// A server-streaming response body.
pub(crate) type ResponseStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;
