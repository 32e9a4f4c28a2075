//! The requests of `QueryService`, parsed from their protobuf messages.
//!
//! Each message is destructured field by field, so that a field added to the
//! contract does not compile until it is handled here. Every bad field is
//! reported, not only the first.

use dynabridge::convert::status_from_pb;
use dynabridge::pb;
use dynabridge_domain::{
    Email, OrderId, ProductId, PurchaseId, Sku, UserId, ValidationError, Version,
};
use dynabridge_runtime::page_token::page_size;

use crate::reader::{OrderListing, ProductListing};

/// How fresh a read must be.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Freshness {
    /// Whatever the read model holds now.
    Latest,
    /// Wait until the row has reached at least this version.
    AtLeast(Version),
}

impl Freshness {
    fn parse(min_version: i64) -> Result<Self, ValidationError> {
        match min_version {
            v if v < 0 => Err(ValidationError::single(
                "min_version",
                "must not be negative (0 reads without waiting)",
            )),
            0 => Ok(Self::Latest),
            v => Ok(Self::AtLeast(v)),
        }
    }
}

/// The number of orders in a page.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PageSize(usize);

impl PageSize {
    pub const DEFAULT: usize = 20;
    pub const MAX: usize = 100;

    fn parse(raw: i32) -> Result<Self, ValidationError> {
        page_size(raw, Self::DEFAULT, Self::MAX).map(Self)
    }

    pub fn get(self) -> usize {
        self.0
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GetUserProfile {
    pub user_id: UserId,
    pub freshness: Freshness,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GetUserByEmail {
    pub email: Email,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GetOrder {
    pub order_id: OrderId,
    pub freshness: Freshness,
}

/// ListOrdersByUser and ListOrdersByStatus.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ListOrders {
    pub listing: OrderListing,
    pub page_size: PageSize,
    /// Empty for the first page. Opened against `listing` later, by
    /// [`crate::page_token::PageTokens`].
    pub page_token: String,
}

/// Both parts, or every violation of the parts that failed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GetProduct {
    pub sku: Sku,
    pub freshness: Freshness,
}

impl GetProduct {
    pub fn product_id(&self) -> ProductId {
        ProductId::for_sku(&self.sku)
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GetPurchase {
    pub purchase_id: PurchaseId,
    pub freshness: Freshness,
    /// Wait until the purchase process has decided it.
    pub wait_for_outcome: bool,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ListProducts {
    pub listing: ProductListing,
    pub page_size: PageSize,
    pub page_token: String,
}

fn both<A, B>(
    a: Result<A, ValidationError>,
    b: Result<B, ValidationError>,
) -> Result<(A, B), ValidationError> {
    match (a, b) {
        (Ok(a), Ok(b)) => Ok((a, b)),
        (a, b) => {
            let mut errors = ValidationError::default();
            errors.extend(a.err().unwrap_or_default());
            errors.extend(b.err().unwrap_or_default());
            Err(errors)
        }
    }
}

impl TryFrom<pb::GetUserProfileRequest> for GetUserProfile {
    type Error = ValidationError;

    fn try_from(request: pb::GetUserProfileRequest) -> Result<Self, Self::Error> {
        let pb::GetUserProfileRequest {
            user_id,
            min_version,
        } = request;
        let (user_id, freshness) = both(
            UserId::parse("user_id", &user_id),
            Freshness::parse(min_version),
        )?;
        Ok(Self { user_id, freshness })
    }
}

impl TryFrom<pb::GetUserByEmailRequest> for GetUserByEmail {
    type Error = ValidationError;

    fn try_from(request: pb::GetUserByEmailRequest) -> Result<Self, Self::Error> {
        let pb::GetUserByEmailRequest { email } = request;
        let email = Email::parse(&email).map_err(|e| e.under("email"))?;
        Ok(Self { email })
    }
}

impl TryFrom<pb::GetOrderRequest> for GetOrder {
    type Error = ValidationError;

    fn try_from(request: pb::GetOrderRequest) -> Result<Self, Self::Error> {
        let pb::GetOrderRequest {
            order_id,
            min_version,
        } = request;
        let (order_id, freshness) = both(
            OrderId::parse("order_id", &order_id),
            Freshness::parse(min_version),
        )?;
        Ok(Self {
            order_id,
            freshness,
        })
    }
}

impl TryFrom<pb::ListOrdersByUserRequest> for ListOrders {
    type Error = ValidationError;

    fn try_from(request: pb::ListOrdersByUserRequest) -> Result<Self, Self::Error> {
        let pb::ListOrdersByUserRequest {
            user_id,
            page_size,
            page_token,
        } = request;
        let (user_id, page_size) = both(
            UserId::parse("user_id", &user_id),
            PageSize::parse(page_size),
        )?;
        Ok(Self {
            listing: OrderListing::ByUser(user_id),
            page_size,
            page_token,
        })
    }
}

impl TryFrom<pb::ListOrdersByStatusRequest> for ListOrders {
    type Error = ValidationError;

    fn try_from(request: pb::ListOrdersByStatusRequest) -> Result<Self, Self::Error> {
        let pb::ListOrdersByStatusRequest {
            status,
            page_size,
            page_token,
        } = request;
        let (status, page_size) = both(
            status_from_pb(status).map_err(|e| e.under("status")),
            PageSize::parse(page_size),
        )?;
        Ok(Self {
            listing: OrderListing::ByStatus(status),
            page_size,
            page_token,
        })
    }
}

impl TryFrom<pb::GetProductRequest> for GetProduct {
    type Error = ValidationError;

    fn try_from(request: pb::GetProductRequest) -> Result<Self, Self::Error> {
        let pb::GetProductRequest { sku, min_version } = request;
        let (sku, freshness) = both(
            Sku::parse(&sku).map_err(|e| e.under("sku")),
            Freshness::parse(min_version),
        )?;
        Ok(Self { sku, freshness })
    }
}

impl TryFrom<pb::GetPurchaseRequest> for GetPurchase {
    type Error = ValidationError;

    fn try_from(request: pb::GetPurchaseRequest) -> Result<Self, Self::Error> {
        let pb::GetPurchaseRequest {
            purchase_id,
            min_version,
            wait_for_outcome,
        } = request;
        let (purchase_id, freshness) = both(
            PurchaseId::parse("purchase_id", &purchase_id),
            Freshness::parse(min_version),
        )?;
        Ok(Self {
            purchase_id,
            freshness,
            wait_for_outcome,
        })
    }
}

impl TryFrom<pb::ListProductsRequest> for ListProducts {
    type Error = ValidationError;

    fn try_from(request: pb::ListProductsRequest) -> Result<Self, Self::Error> {
        let pb::ListProductsRequest {
            page_size,
            page_token,
        } = request;
        Ok(Self {
            listing: ProductListing::All,
            page_size: PageSize::parse(page_size)?,
            page_token,
        })
    }
}

impl TryFrom<pb::ListLowStockProductsRequest> for ListProducts {
    type Error = ValidationError;

    fn try_from(request: pb::ListLowStockProductsRequest) -> Result<Self, Self::Error> {
        let pb::ListLowStockProductsRequest {
            page_size,
            page_token,
        } = request;
        Ok(Self {
            listing: ProductListing::LowStock,
            page_size: PageSize::parse(page_size)?,
            page_token,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use dynabridge_domain::OrderStatus;

    fn fields(err: ValidationError) -> Vec<String> {
        err.violations.into_iter().map(|v| v.field).collect()
    }

    #[test]
    fn page_size_defaults_and_bounds() {
        assert_eq!(PageSize::parse(0).unwrap().get(), 20);
        assert_eq!(PageSize::parse(1).unwrap().get(), 1);
        assert_eq!(PageSize::parse(100).unwrap().get(), 100);
        for bad in [-1, 101, i32::MIN, i32::MAX] {
            assert_eq!(
                fields(PageSize::parse(bad).unwrap_err()),
                ["page_size"],
                "{bad}"
            );
        }
    }

    #[test]
    fn min_version_zero_means_latest_and_negative_is_refused() {
        assert_eq!(Freshness::parse(0).unwrap(), Freshness::Latest);
        assert_eq!(Freshness::parse(3).unwrap(), Freshness::AtLeast(3));
        assert_eq!(fields(Freshness::parse(-1).unwrap_err()), ["min_version"]);
    }

    #[test]
    fn get_user_profile_reports_every_bad_field() {
        let err = GetUserProfile::try_from(pb::GetUserProfileRequest {
            user_id: "nope".into(),
            min_version: -2,
        })
        .unwrap_err();
        assert_eq!(fields(err), ["user_id", "min_version"]);
        let id = UserId::new_random();
        let ok = GetUserProfile::try_from(pb::GetUserProfileRequest {
            user_id: id.to_string(),
            min_version: 0,
        })
        .unwrap();
        assert_eq!((ok.user_id, ok.freshness), (id, Freshness::Latest));
    }

    #[test]
    fn get_order_needs_a_uuid() {
        let err = GetOrder::try_from(pb::GetOrderRequest {
            order_id: String::new(),
            min_version: 1,
        })
        .unwrap_err();
        assert_eq!(fields(err), ["order_id"]);
    }

    #[test]
    fn email_is_normalised_or_named() {
        let ok = GetUserByEmail::try_from(pb::GetUserByEmailRequest {
            email: " Ann@Example.COM ".into(),
        })
        .unwrap();
        assert_eq!(ok.email.as_str(), "ann@example.com");
        let err = GetUserByEmail::try_from(pb::GetUserByEmailRequest {
            email: "not an address".into(),
        })
        .unwrap_err();
        assert_eq!(fields(err), ["email"]);
    }

    #[test]
    fn status_must_be_a_known_non_default_value() {
        for status in [pb::OrderStatus::Unspecified as i32, 99, -1] {
            let err = ListOrders::try_from(pb::ListOrdersByStatusRequest {
                status,
                page_size: 0,
                page_token: String::new(),
            })
            .unwrap_err();
            assert_eq!(fields(err), ["status"], "{status}");
        }
        let ok = ListOrders::try_from(pb::ListOrdersByStatusRequest {
            status: pb::OrderStatus::Shipped as i32,
            page_size: 5,
            page_token: "t".into(),
        })
        .unwrap();
        assert_eq!(ok.listing, OrderListing::ByStatus(OrderStatus::Shipped));
        assert_eq!((ok.page_size.get(), ok.page_token.as_str()), (5, "t"));
    }

    #[test]
    fn list_by_user_reports_user_and_page_size() {
        let err = ListOrders::try_from(pb::ListOrdersByUserRequest {
            user_id: "x".into(),
            page_size: 101,
            page_token: String::new(),
        })
        .unwrap_err();
        assert_eq!(fields(err), ["user_id", "page_size"]);
    }
}
