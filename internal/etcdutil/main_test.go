package etcdutil_test

import (
	"testing"

	"github.com/etcdkit/etcdkit/test/etcdtest"
)

func TestMain(m *testing.M) { etcdtest.VerifyTestMain(m) }
