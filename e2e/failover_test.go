package e2e

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/tidestream/tidestream/e2e/harness"
	pb "github.com/tidestream/tidestream/proto/tidestream/v1"
)

type coordProc struct {
	id   string
	addr string
	proc *harness.Proc
	cli  pb.ClusterServiceClient
}

// Three coordinators on one external etcd elect exactly one owner; after
// kill -9 of the owner another one takes over within 10 s.
func TestOwnerFailoverAfterKill9(t *testing.T) {
	etcd := harness.StartEtcd(t)
	var coords []*coordProc
	for i := 0; i < 3; i++ {
		c := &coordProc{id: fmt.Sprintf("coord-%d", i)}
		var addrs []string
		c.proc, addrs = harness.StartOnFreePorts(t, harness.Launch{Name: c.id, Bin: harness.CDC(t), Addrs: 2,
			Args: func(addrs []string) []string {
				return []string{"coordinator",
					"--etcd", etcd.Endpoint, "--member-id", c.id, "--cluster-id", "failover",
					"--addr", addrs[0], "--status-addr", addrs[1],
					"--data-dir", t.TempDir(), "--session-ttl", "5s"}
			},
			Ready: harness.Serving(60 * time.Second),
		})
		c.addr = addrs[0]
		c.cli = pb.NewClusterServiceClient(harness.Dial(t, c.addr))
		coords = append(coords, c)
	}

	// Every coordinator sees the same single owner among three members.
	var ownerID string
	harness.Eventually(t, 15*time.Second, "one owner elected", func() error {
		id, err := agreedOwner(coords, 3)
		ownerID = id
		return err
	})
	var victim *coordProc
	for _, c := range coords {
		if c.id == ownerID {
			victim = c
		}
	}
	require.NotNil(t, victim, "owner %q is not one of ours", ownerID)

	victim.proc.Kill()
	killedAt := time.Now()
	var survivors []*coordProc
	for _, c := range coords {
		if c != victim {
			survivors = append(survivors, c)
		}
	}
	var newOwner string
	harness.Eventually(t, 10*time.Second, "a new owner after kill -9", func() error {
		id, err := agreedOwner(survivors, 2)
		if err != nil {
			return err
		}
		if id == victim.id {
			return fmt.Errorf("killed member %s still owner", id)
		}
		newOwner = id
		return nil
	})
	took := time.Since(killedAt)
	t.Logf("owner %s killed; %s became owner after %s", victim.id, newOwner, took.Round(time.Millisecond))
	require.Less(t, took, 10*time.Second)
}

// agreedOwner asks each coordinator who the owner is and requires that all
// agree, that the owner is a live member, and that exactly one member of
// the expected count is marked owner.
func agreedOwner(coords []*coordProc, wantMembers int) (string, error) {
	var owner string
	for _, c := range coords {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		ms, err := c.cli.Members(ctx, &pb.MembersRequest{})
		cancel()
		if err != nil {
			return "", fmt.Errorf("%s: members: %w", c.id, err)
		}
		if len(ms.Members) != wantMembers {
			return "", fmt.Errorf("%s sees %d members, want %d", c.id, len(ms.Members), wantMembers)
		}
		owners := 0
		for _, m := range ms.Members {
			if m.IsOwner {
				owners++
				if owner == "" {
					owner = m.Id
				} else if owner != m.Id {
					return "", fmt.Errorf("coordinators disagree on the owner: %s vs %s", owner, m.Id)
				}
			}
		}
		if owners != 1 {
			return "", fmt.Errorf("%s sees %d owners", c.id, owners)
		}
	}
	return owner, nil
}
