//! The git receiver: an SSH server taking `git push`, authorized by Kubernetes RBAC, driving the slugbuilder Job and creating Releases. Not built yet; see the git receiver issue.
