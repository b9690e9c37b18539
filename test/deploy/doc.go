// Package deploy checks the deployment examples under deploy/ (the systemd unit and its
// environment file, the Kubernetes manifests) against the library: the manager's defaults
// and timeouts, the options it accepts, and the paths its probe and metrics servers answer.
// Its tests fail, naming the file and the setting, when one of those files is edited out of
// step with the library or with the rest of the file.
package deploy
