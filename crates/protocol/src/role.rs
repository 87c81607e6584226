//! What an account or a token may do.
//!
//! One role per account or token; a role implies the ones below it, so a
//! receiver checks for the role it needs and an admin passes every check an
//! operator passes. `agent` is apart: a host, not a person.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Manages accounts and tokens; may do what an operator does.
    Admin,
    /// Commands agents; may do what a viewer does.
    Operator,
    /// Reads.
    Viewer,
    /// A host running the agent.
    Agent,
}

impl Role {
    pub const ALL: [Role; 4] = [Role::Admin, Role::Operator, Role::Viewer, Role::Agent];

    /// The role and every role it implies, highest first: what a MESSAGE
    /// receipt's `origin.roles` lists.
    pub fn implied(self) -> &'static [Role] {
        match self {
            Role::Admin => &[Role::Admin, Role::Operator, Role::Viewer],
            Role::Operator => &[Role::Operator, Role::Viewer],
            Role::Viewer => &[Role::Viewer],
            Role::Agent => &[Role::Agent],
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Operator => "operator",
            Role::Viewer => "viewer",
            Role::Agent => "agent",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Role {
    type Err = String;

    fn from_str(s: &str) -> Result<Role, String> {
        Role::ALL
            .into_iter()
            .find(|r| r.as_str() == s)
            .ok_or_else(|| {
                format!("no role {s:?}: the roles are admin, operator, viewer and agent")
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_imply_the_ones_below_them() {
        assert!(Role::Admin.implied().contains(&Role::Operator));
        assert!(Role::Operator.implied().contains(&Role::Viewer));
        assert!(!Role::Viewer.implied().contains(&Role::Operator));
        assert_eq!(Role::Agent.implied(), &[Role::Agent]);
    }

    #[test]
    fn roles_parse_by_their_names_only() {
        for role in Role::ALL {
            assert_eq!(role.as_str().parse::<Role>(), Ok(role));
        }
        assert!("root"
            .parse::<Role>()
            .unwrap_err()
            .contains("admin, operator"));
    }
}
