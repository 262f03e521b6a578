//! Per-project egress allow-lists (`network_policies`, migration 0110), read by every
//! process that spawns a project's commands before each spawn.

use async_trait::async_trait;

use super::columns::{Cols, json};
use super::db::Arg;
use super::dialect::sql;
use super::{Db, SqlStore};
use crate::domain::ProjectId;
use crate::domain::network::NetworkPolicy;
use crate::ports::{NetworkPolicyStore, StoreError};

fn policy_from_row<D: Db>(row: &D::Row) -> Result<NetworkPolicy, StoreError> {
    let cols = Cols::<D>::new(row, "network_policies");
    Ok(NetworkPolicy {
        project_id: cols.parse("project_id", ProjectId::parse)?,
        allow: cols.json("allow")?,
        updated_at: cols.time("updated_at")?,
    })
}

#[async_trait]
impl<D: Db> NetworkPolicyStore for SqlStore<D> {
    async fn network_policy(
        &self,
        project: &ProjectId,
    ) -> Result<Option<NetworkPolicy>, StoreError> {
        let context = "reading a network policy";
        let query = sqlx::query(
            "SELECT project_id, allow, updated_at FROM network_policies WHERE project_id = $1",
        )
        .arg(project.as_str());
        self.find_optional(query, policy_from_row::<D>, context)
            .await
    }

    async fn set_network_policy(
        &self,
        project: &ProjectId,
        allow: &[String],
    ) -> Result<NetworkPolicy, StoreError> {
        let query = sqlx::query(sql!(
            D,
            "INSERT INTO network_policies (project_id, allow, updated_at) VALUES ($1, $2, {now}) \
             ON CONFLICT (project_id) DO UPDATE SET allow = excluded.allow, \
             updated_at = excluded.updated_at RETURNING project_id, allow, updated_at"
        ))
        .arg(project.as_str())
        .arg(json(&allow)?);
        self.put_for_project(
            query,
            policy_from_row::<D>,
            "storing a network policy",
            project,
        )
        .await
    }

    async fn clear_network_policy(&self, project: &ProjectId) -> Result<bool, StoreError> {
        let query =
            sqlx::query("DELETE FROM network_policies WHERE project_id = $1").arg(project.as_str());
        self.remove(query, "removing a network policy").await
    }
}
