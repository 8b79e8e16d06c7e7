//! Cluster-wide lists, a page at a time, for the sweeps that compare what exists on disk or
//! in a store with what the API says should (the slug store's and the git receiver's garbage
//! collection).

use kube::api::{Api, ListParams, ObjectList};

/// Objects per page: large clusters are read in several answers, not one.
const PAGE: u32 = 500;

/// Every `K` the client may list, in all namespaces. One consistent snapshot unless the
/// list outlives the API server's continue-token expiry (then the error says so).
pub async fn all<K>(client: &kube::Client) -> Result<Vec<K>, kube::Error>
where
    K: kube::Resource<DynamicType = ()> + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let api: Api<K> = Api::all(client.clone());
    let mut all = Vec::new();
    let mut params = ListParams::default().limit(PAGE);
    loop {
        let page: ObjectList<K> = api.list(&params).await?;
        all.extend(page.items);
        match page.metadata.continue_ {
            Some(token) if !token.is_empty() => params = params.continue_token(&token),
            _ => return Ok(all),
        }
    }
}
