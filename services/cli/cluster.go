package cli

import (
	"context"
	"fmt"

	"github.com/spf13/cobra"
	"google.golang.org/grpc"

	pb "github.com/tidestream/tidestream/proto/tidestream/v1"
)

// connCommand is a command tree with the connection flags every cli
// command takes, and TiCDC's deprecated --pd accepted and ignored: old
// guides pass it to `capture list` and `processor list`, which ask the
// server, not PD.
func connCommand(use, short string, conn *ConnFlags) *cobra.Command {
	cmd := &cobra.Command{Use: use, Short: short}
	pf := cmd.PersistentFlags()
	conn.addFlags(pf)
	var pd string
	pf.StringVar(&pd, "pd", "", "deprecated, ignored: the server is --server")
	_ = pf.MarkHidden("pd")
	return cmd
}

// captureJSON is one entry of `capture list`: TiCDC's keys, then the
// member's roles (every TiCDC capture runs everything; ours need not).
type captureJSON struct {
	ID        string   `json:"id"`
	IsOwner   bool     `json:"is_owner"`
	Address   string   `json:"address"`
	ClusterID string   `json:"cluster_id"`
	Roles     []string `json:"roles"`
}

// NewCaptureCommand returns the `capture` command tree (`cdc cli capture
// list`): the members of the cluster, TiCDC's captures.
func NewCaptureCommand() *cobra.Command {
	var conn ConnFlags
	cmd := connCommand("capture", "Show the members of the cluster (TiCDC's captures)", &conn)
	cmd.AddCommand(&cobra.Command{
		Use:   "list",
		Short: "List the members, marking the owner",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var resp *pb.MembersResponse
			err := invoke(cmd.Context(), conn, func(ctx context.Context, c grpc.ClientConnInterface) error {
				var err error
				resp, err = pb.NewClusterServiceClient(c).Members(ctx, &pb.MembersRequest{})
				return err
			})
			if err != nil {
				return fmt.Errorf("failed to list captures: %w", err)
			}
			return printJSON(cmd.OutOrStdout(), renderCaptures(resp), true)
		},
	})
	return cmd
}

func renderCaptures(resp *pb.MembersResponse) []captureJSON {
	out := make([]captureJSON, 0, len(resp.GetMembers()))
	for _, m := range resp.GetMembers() {
		roles := m.GetRoles()
		if roles == nil {
			roles = []string{}
		}
		out = append(out, captureJSON{ID: m.GetId(), IsOwner: m.GetIsOwner(), Address: m.GetAddr(), ClusterID: resp.GetClusterId(), Roles: roles})
	}
	return out
}

// processorJSON is one entry of `processor list`, TiCDC's shape.
type processorJSON struct {
	ChangefeedID string `json:"changefeed_id"`
	Namespace    string `json:"namespace"`
	CaptureID    string `json:"capture_id"`
}

// NewProcessorCommand returns the `processor` command tree (`cdc cli
// processor list`): each changefeed on each member running its pipelines.
func NewProcessorCommand() *cobra.Command {
	var conn ConnFlags
	cmd := connCommand("processor", "Show where changefeeds run (TiCDC's processors)", &conn)
	cmd.AddCommand(&cobra.Command{
		Use:   "list",
		Short: "List, per changefeed, the members running its table pipelines",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var resp *pb.ListProcessorsResponse
			err := invoke(cmd.Context(), conn, func(ctx context.Context, c grpc.ClientConnInterface) error {
				var err error
				resp, err = pb.NewChangefeedServiceClient(c).ListProcessors(ctx, &pb.ListProcessorsRequest{})
				return err
			})
			if err != nil {
				return fmt.Errorf("failed to list processors: %w", err)
			}
			out := make([]processorJSON, 0, len(resp.GetProcessors()))
			for _, p := range resp.GetProcessors() {
				out = append(out, processorJSON{ChangefeedID: p.GetChangefeedId(), Namespace: p.GetNamespace(), CaptureID: p.GetMemberId()})
			}
			return printJSON(cmd.OutOrStdout(), out, true)
		},
	})
	return cmd
}
