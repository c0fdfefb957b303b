//! The `casegate.v1` gRPC services. Each handler starts from the authenticated [`Principal`].
//!
//! [`Principal`]: crate::app::principal::Principal

pub(crate) mod audit;
mod consent;
pub(crate) mod disclosure;

use std::pin::Pin;

use futures_util::Stream;
use tonic::Status;

pub(crate) use audit::AuditApi;
pub(crate) use consent::ConsentApi;
pub(crate) use disclosure::DisclosureApi;

/// A server-streaming response body.
pub(crate) type ResponseStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;
