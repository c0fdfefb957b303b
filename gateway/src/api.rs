//! The `casegate.v1` gRPC services. Each handler starts from the authenticated [`Principal`].
//!
//! [`Principal`]: crate::app::principal::Principal

pub mod audit;
mod consent;
pub mod disclosure;

use std::pin::Pin;

use futures_util::Stream;
use tonic::Status;

pub use audit::AuditApi;
pub use consent::ConsentApi;
pub use disclosure::DisclosureApi;

/// A server-streaming response body.
pub type ResponseStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;
