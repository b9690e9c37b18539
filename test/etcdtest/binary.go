package etcdtest

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"

	"go.etcd.io/etcd/api/v3/version"
)

// BinaryEnv names an environment variable that, when set, is the path of the etcd binary
// that StartProcesses runs instead of building one.
const BinaryEnv = "ETCDKIT_ETCD_BIN"

// serverPackage is the main package that wraps etcdmain.
const serverPackage = "github.com/etcdkit/etcdkit/test/etcdtest/cmd/etcd"

var binaryOnce struct {
	sync.Mutex
	path string
}

// EtcdBinary returns the path of an etcd binary for StartProcesses. It is the file named by
// $ETCDKIT_ETCD_BIN when set; otherwise it is built with the go command from etcdmain at the
// etcd version this binary was built with, and cached in the user cache directory
// (etcdkit/etcd-<version>-<go version>-<os>-<arch>), so later runs reuse it. Nothing is
// downloaded beyond the go command's own module fetching.
func EtcdBinary(ctx context.Context) (string, error) {
	if p := os.Getenv(BinaryEnv); p != "" {
		if _, err := os.Stat(p); err != nil {
			return "", fmt.Errorf("etcdtest: $%s: %w", BinaryEnv, err)
		}
		return p, nil
	}
	binaryOnce.Lock()
	defer binaryOnce.Unlock()
	if binaryOnce.path != "" {
		return binaryOnce.path, nil
	}
	cache, err := os.UserCacheDir()
	if err != nil {
		cache = os.TempDir()
	}
	name := fmt.Sprintf("etcd-%s-%s-%s-%s", serverVersion(), runtime.Version(), runtime.GOOS, runtime.GOARCH)
	if runtime.GOOS == "windows" {
		name += ".exe" // os/exec runs only a file with an executable extension there
	}
	path := filepath.Join(cache, "etcdkit", name)
	if _, err := os.Stat(path); err == nil {
		binaryOnce.path = path
		return path, nil
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return "", fmt.Errorf("etcdtest: binary cache: %w", err)
	}
	// Build beside the final name and rename, so that concurrent builders (test binaries of
	// several packages) never run a half-written file.
	tmp := fmt.Sprintf("%s.tmp%d", path, os.Getpid())
	cmd := exec.CommandContext(ctx, "go", "build", "-o", tmp, serverPackage)
	if out, err := cmd.CombinedOutput(); err != nil {
		_ = os.Remove(tmp)
		return "", fmt.Errorf("etcdtest: building etcd (go build %s): %v: %s", serverPackage, err, strings.TrimSpace(string(out)))
	}
	if err := os.Rename(tmp, path); err != nil {
		return "", fmt.Errorf("etcdtest: binary cache: %w", err)
	}
	binaryOnce.path = path
	return path, nil
}

// serverVersion is the version of etcd this binary was built with.
func serverVersion() string { return version.Version }
