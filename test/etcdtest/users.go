package etcdtest

import (
	"context"
	"fmt"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// Perm is one permission of a user made by AddUser: read, write or both on every key under
// Prefix, or on the one key Key when Prefix is empty.
type Perm struct {
	Prefix, Key string
	Read, Write bool
}

// Read grants reading every key under prefix.
func Read(prefix string) Perm { return Perm{Prefix: prefix, Read: true} }

// Write grants writing every key under prefix.
func Write(prefix string) Perm { return Perm{Prefix: prefix, Write: true} }

// ReadWrite grants reading and writing every key under prefix.
func ReadWrite(prefix string) Perm { return Perm{Prefix: prefix, Read: true, Write: true} }

// AddUser creates, on an auth cluster, a user with the password and a role of the same name
// that holds exactly perms, as an operator's least-privilege setup would.
func (c *Cluster) AddUser(ctx context.Context, name, password string, perms ...Perm) error {
	if c.opts.password == "" {
		return fmt.Errorf("etcdtest: AddUser %s: the cluster has no auth (use WithAuth)", name)
	}
	cli := c.client
	if _, err := cli.UserAdd(ctx, name, password); err != nil {
		return fmt.Errorf("etcdtest: adding user %s: %w", name, err)
	}
	if _, err := cli.RoleAdd(ctx, name); err != nil {
		return fmt.Errorf("etcdtest: adding role %s: %w", name, err)
	}
	for _, p := range perms {
		if err := c.grant(ctx, name, p); err != nil {
			return err
		}
	}
	if _, err := cli.UserGrantRole(ctx, name, name); err != nil {
		return fmt.Errorf("etcdtest: granting role %s: %w", name, err)
	}
	return nil
}

// Grant adds perm to the role of a user made by AddUser. As etcd does, it replaces a
// permission the role holds on the same key or prefix.
func (c *Cluster) Grant(ctx context.Context, user string, perm Perm) error {
	return c.grant(ctx, user, perm)
}

// Revoke takes perm (as given to AddUser or Grant) from the role of a user made by AddUser.
func (c *Cluster) Revoke(ctx context.Context, user string, perm Perm) error {
	key, end := perm.Key, ""
	if perm.Prefix != "" {
		key, end = perm.Prefix, clientv3.GetPrefixRangeEnd(perm.Prefix)
	}
	if _, err := c.client.RoleRevokePermission(ctx, user, key, end); err != nil {
		return fmt.Errorf("etcdtest: revoking %s from %s: %w", key, user, err)
	}
	return nil
}

func (c *Cluster) grant(ctx context.Context, role string, p Perm) error {
	var typ clientv3.PermissionType
	switch {
	case p.Read && p.Write:
		typ = clientv3.PermissionType(clientv3.PermReadWrite)
	case p.Write:
		typ = clientv3.PermissionType(clientv3.PermWrite)
	case p.Read:
		typ = clientv3.PermissionType(clientv3.PermRead)
	default:
		return fmt.Errorf("etcdtest: a permission on %q%q grants neither read nor write", p.Prefix, p.Key)
	}
	key, end := p.Key, ""
	if p.Prefix != "" {
		key, end = p.Prefix, clientv3.GetPrefixRangeEnd(p.Prefix)
	}
	if _, err := c.client.RoleGrantPermission(ctx, role, key, end, typ); err != nil {
		return fmt.Errorf("etcdtest: granting %v on %s to %s: %w", p, key, role, err)
	}
	return nil
}

// UserClient returns a new client of all members that authenticates as user; the caller
// closes it.
func (c *Cluster) UserClient(user, password string) (*clientv3.Client, error) {
	cfg := c.clientConfig(c.Endpoints(), false)
	cfg.Username, cfg.Password = user, password
	cli, err := clientv3.New(cfg)
	if err != nil {
		return nil, fmt.Errorf("etcdtest: client of %s: %w", user, err)
	}
	return cli, nil
}
