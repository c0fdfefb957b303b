//! `casegate.v1.ConsentService`: consent records.

use casegate_proto::v1::{
    CheckDisclosureRequest, CheckDisclosureResponse, GetConsentRequest, GetConsentResponse,
    GrantConsentRequest, GrantConsentResponse, ListConsentsRequest, ListConsentsResponse,
    WithdrawConsentRequest, WithdrawConsentResponse, consent_service_server::ConsentService,
};
use tonic::{Request, Response, Status};

use crate::principal::Principal;
use crate::status::not_available;

const CAPABILITY: &str = "the consent store";

#[derive(Debug, Default, Clone)]
pub struct ConsentApi;

#[tonic::async_trait]
impl ConsentService for ConsentApi {
    async fn grant_consent(
        &self,
        request: Request<GrantConsentRequest>,
    ) -> Result<Response<GrantConsentResponse>, Status> {
        Principal::of(&request)?;
        Err(not_available("GrantConsent", CAPABILITY))
    }

    async fn get_consent(
        &self,
        request: Request<GetConsentRequest>,
    ) -> Result<Response<GetConsentResponse>, Status> {
        Principal::of(&request)?;
        Err(not_available("GetConsent", CAPABILITY))
    }

    async fn list_consents(
        &self,
        request: Request<ListConsentsRequest>,
    ) -> Result<Response<ListConsentsResponse>, Status> {
        Principal::of(&request)?;
        Err(not_available("ListConsents", CAPABILITY))
    }

    async fn withdraw_consent(
        &self,
        request: Request<WithdrawConsentRequest>,
    ) -> Result<Response<WithdrawConsentResponse>, Status> {
        Principal::of(&request)?;
        Err(not_available("WithdrawConsent", CAPABILITY))
    }

    async fn check_disclosure(
        &self,
        request: Request<CheckDisclosureRequest>,
    ) -> Result<Response<CheckDisclosureResponse>, Status> {
        Principal::of(&request)?;
        Err(not_available("CheckDisclosure", "the consent decision"))
    }
}
