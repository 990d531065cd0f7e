package cli

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/tidestream/tidestream/coordinator/cdcerr"
	pb "github.com/tidestream/tidestream/proto/tidestream/v1"
)

// callTimeout bounds one control call. Create talks to PD and etcd; a
// minute is generous for both and still ends a hung command.
const callTimeout = time.Minute

// lagConfirmThreshold: TiCDC asks before replicating from a start ts more
// than a day old, since the backlog may be large.
const lagConfirmThreshold = 24 * time.Hour

type env struct {
	conn ConnFlags
	// pd is the upstream PD for create; empty means the server's --pd.
	pd string
	// now is the clock (for the start-ts lag prompt).
	now func() time.Time
}

// NewChangefeedCommand returns the `changefeed` command tree. Mount it under
// `cdc cli` and directly under `cdc` (the ctl-style alias).
func NewChangefeedCommand() *cobra.Command {
	e := &env{now: time.Now}
	cmd := &cobra.Command{
		Use:   "changefeed",
		Short: "Manage changefeeds (create, list, query, pause, resume, remove, update)",
	}
	pf := cmd.PersistentFlags()
	e.conn.addFlags(pf)
	pf.StringVar(&e.pd, "pd", "", "upstream PD endpoints, comma-separated (default: the server's --pd)")
	cmd.AddCommand(e.createCmd(), e.listCmd(), e.queryCmd(), e.pauseCmd(), e.resumeCmd(), e.removeCmd(), e.updateCmd())
	return cmd
}

// call runs fn on the changefeed service (see invoke).
func (e *env) call(ctx context.Context, fn func(context.Context, pb.ChangefeedServiceClient) error) error {
	return invoke(ctx, e.conn, func(ctx context.Context, conn grpc.ClientConnInterface) error {
		return fn(ctx, pb.NewChangefeedServiceClient(conn))
	})
}

// invoke dials, runs fn with a bounded context and maps the status error
// back into cdcerr so the message is the server's one-line reason.
func invoke(ctx context.Context, flags ConnFlags, fn func(context.Context, grpc.ClientConnInterface) error) error {
	conn, err := flags.Dial()
	if err != nil {
		return err
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(ctx, callTimeout)
	defer cancel()
	err = fn(ctx, conn)
	if err == nil {
		return nil
	}
	// UNAVAILABLE made by the server itself (its PD or TiKV is down) carries
	// cdcerr's detail and keeps the server's message.
	if status.Code(err) == codes.Unavailable && !cdcerr.FromServer(err) {
		tgt, _, _ := target(flags.Server)
		return fmt.Errorf("cannot reach tidestream server at %s: %s", tgt, status.Convert(err).Message())
	}
	return cdcerr.FromStatus(err)
}

// printJSON writes v as one JSON document and a newline. HTML escaping is
// off: sink URIs are full of '&', and "\u0026" in a URI helps nobody.
func printJSON(w io.Writer, v any, indent bool) error {
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(false)
	if indent {
		enc.SetIndent("", "  ")
	}
	return enc.Encode(v)
}

// confirm asks a Y/N question on the command's input; anything but y/yes
// (including no input at all) is no. One command may ask twice (the start-ts
// lag, then the ineligible tables), so the buffered reader is kept as the
// command's input: a second reader would find piped answers already
// swallowed by the first. The question ends its line, as TiCDC's does, so
// that with piped answers (which are not echoed) what follows starts on a
// line of its own.
func confirm(cmd *cobra.Command, question string) bool {
	fmt.Fprintf(cmd.OutOrStdout(), "%s [Y/N]\n", question)
	in, ok := cmd.InOrStdin().(*bufio.Reader)
	if !ok {
		in = bufio.NewReader(cmd.InOrStdin())
		cmd.SetIn(in)
	}
	line, _ := in.ReadString('\n')
	answer := strings.ToLower(strings.TrimSpace(line))
	return answer == "y" || answer == "yes"
}

func (e *env) pdList() []string {
	if e.pd == "" {
		return nil
	}
	return strings.Split(e.pd, ",")
}

func (e *env) createCmd() *cobra.Command {
	var (
		req              pb.CreateChangefeedRequest
		configPath       string
		noConfirm        bool
		sortEngine       string
		sortDir          string
		timezone         string
		upstreamPD       string
		disableGCCheck   bool
		ignoreIneligible bool
	)
	cmd := &cobra.Command{
		Use:   "create",
		Short: "Create a changefeed",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if req.SinkUri == "" {
				return errors.New("--sink-uri is required")
			}
			if sortDir != "" {
				return errors.New("--sort-dir is no longer supported: the sorter's directory is the server's --data-dir")
			}
			if configPath != "" {
				if strings.HasPrefix(configPath, "@") {
					configPath = configPath[1:]
				}
				b, err := os.ReadFile(configPath)
				if err != nil {
					return fmt.Errorf("--config: %w", err)
				}
				req.ConfigToml = string(b)
			}
			req.PdAddrs = e.pdList()
			if upstreamPD != "" {
				req.PdAddrs = strings.Split(upstreamPD, ",")
			}
			req.DisableGcCheck = disableGCCheck
			req.IgnoreIneligibleTable = ignoreIneligible || noConfirm
			if req.StartTs != 0 && !noConfirm {
				if lag := e.now().Sub(tsoTime(req.StartTs)); lag > lagConfirmThreshold {
					q := fmt.Sprintf("Replicate lag (%s) is larger than 1 days, large data may cause OOM, confirm to continue at your own risk", lag.Round(time.Second))
					if !confirm(cmd, q) {
						return errors.New("create changefeed cancelled by user")
					}
				}
			}
			create := func() (info *pb.ChangefeedInfo, err error) {
				err = e.call(cmd.Context(), func(ctx context.Context, c pb.ChangefeedServiceClient) error {
					info, err = c.Create(ctx, &req)
					return err
				})
				return info, err
			}
			w := cmd.OutOrStdout()
			info, err := create()
			// The server checks the tables (every client gets the check);
			// the question is the CLI's, as in TiCDC. It is asked only
			// when nothing said to ignore them already.
			var ineligible *cdcerr.IneligibleTablesError
			if errors.As(err, &ineligible) && !req.IgnoreIneligibleTable {
				listed := strings.Join(ineligible.Tables, ", ")
				if listed == "" {
					listed = err.Error() // a server that sent no list
				}
				fmt.Fprintf(w, "[WARN] some tables are not eligible to replicate, because they have neither a primary key nor a not-null unique key: %s\n", listed)
				if !confirm(cmd, "Could you agree to ignore those tables, and continue to replicate") {
					fmt.Fprintln(w, "No changefeed is created because you don't want to ignore some tables.")
					return errors.New("create changefeed cancelled by user")
				}
				req.IgnoreIneligibleTable = true
				info, err = create()
			}
			if err != nil {
				return fmt.Errorf("failed to create changefeed: %w", err)
			}
			out, err := renderInfo(info)
			if err != nil {
				return err
			}
			fmt.Fprintln(w, "Create changefeed successfully!")
			fmt.Fprintf(w, "ID: %s\n", info.Id)
			fmt.Fprint(w, "Info: ")
			return printJSON(w, out, false)
		},
	}
	f := cmd.Flags()
	f.StringVar(&req.SinkUri, "sink-uri", "", "sink URI, e.g. kafka://host:9092/ticdc-meta?protocol=avro")
	f.StringVarP(&req.Id, "changefeed-id", "c", "", "changefeed ID (default: a generated UUID)")
	f.StringVarP(&req.Namespace, "namespace", "n", "default", "changefeed namespace")
	f.Uint64Var(&req.StartTs, "start-ts", 0, "start TSO (default: the upstream's current TSO)")
	f.Uint64Var(&req.TargetTs, "target-ts", 0, "stop at this TSO (0: never)")
	f.StringVar(&configPath, "config", "", "path of the changefeed TOML file")
	f.StringVar(&req.SchemaRegistry, "schema-registry", "", "Schema Registry URL, credentials URL-encoded: https://KEY:SECRET@host")
	f.BoolVar(&noConfirm, "no-confirm", false, "do not ask for confirmation; ignore tables without a valid index")
	f.BoolVar(&disableGCCheck, "disable-gc-check", false, "do not check start-ts against the GC safepoint")
	f.BoolVar(&ignoreIneligible, "ignore-ineligible-table", false, "skip tables without a primary key or not-null unique index")
	f.StringVar(&sortEngine, "sort-engine", "unified", "deprecated, ignored")
	f.StringVar(&sortDir, "sort-dir", "", "deprecated; setting it is an error")
	f.StringVar(&timezone, "tz", "SYSTEM", "deprecated, ignored")
	f.StringVar(&upstreamPD, "upstream-pd", "", "upstream PD endpoints (alias of --pd)")
	for _, h := range []string{"sort-engine", "sort-dir", "tz", "upstream-pd"} {
		_ = f.MarkHidden(h)
	}
	return cmd
}

func (e *env) listCmd() *cobra.Command {
	var (
		all bool
		ns  string
	)
	cmd := &cobra.Command{
		Use:   "list",
		Short: "List changefeeds",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var resp *pb.ListChangefeedsResponse
			err := e.call(cmd.Context(), func(ctx context.Context, c pb.ChangefeedServiceClient) error {
				var err error
				resp, err = c.List(ctx, &pb.ListChangefeedsRequest{Namespace: ns, All: all})
				return err
			})
			if err != nil {
				return fmt.Errorf("failed to list changefeeds: %w", err)
			}
			out := make([]summaryJSON, 0, len(resp.Changefeeds))
			for _, info := range resp.Changefeeds {
				out = append(out, renderSummary(info))
			}
			return printJSON(cmd.OutOrStdout(), out, true)
		},
	}
	cmd.Flags().BoolVarP(&all, "all", "a", false, "include finished changefeeds")
	cmd.Flags().StringVarP(&ns, "namespace", "n", "", "only this namespace (default: all)")
	return cmd
}

// idFlags adds -c/--changefeed-id (required) and -n/--namespace.
func idFlags(cmd *cobra.Command, ref *pb.ChangefeedRef) {
	cmd.Flags().StringVarP(&ref.Id, "changefeed-id", "c", "", "changefeed ID")
	cmd.Flags().StringVarP(&ref.Namespace, "namespace", "n", "default", "changefeed namespace")
	_ = cmd.MarkFlagRequired("changefeed-id")
}

func (e *env) queryCmd() *cobra.Command {
	var (
		ref    pb.ChangefeedRef
		simple bool
	)
	cmd := &cobra.Command{
		Use:   "query",
		Short: "Show one changefeed",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			req := &pb.GetChangefeedRequest{Namespace: ref.Namespace, Id: ref.Id}
			if simple {
				var info *pb.ChangefeedInfo
				err := e.call(cmd.Context(), func(ctx context.Context, c pb.ChangefeedServiceClient) error {
					var err error
					info, err = c.Get(ctx, req)
					return err
				})
				if err != nil {
					return fmt.Errorf("failed to query changefeed: %w", err)
				}
				s := renderSummary(info)
				return printJSON(cmd.OutOrStdout(), simpleJSON{
					UpstreamID: info.UpstreamId, Namespace: info.Namespace, ID: info.Id,
					State: s.Summary.State, CheckpointTso: info.CheckpointTs, CheckpointTime: s.Summary.Checkpoint,
					Error: s.Summary.Error,
				}, true)
			}
			var detail *pb.ChangefeedDetail
			err := e.call(cmd.Context(), func(ctx context.Context, c pb.ChangefeedServiceClient) error {
				var err error
				detail, err = c.Query(ctx, req)
				if status.Code(err) == codes.Unimplemented {
					// A server older than Query: the changefeed alone,
					// with no pipelines to show.
					var info *pb.ChangefeedInfo
					info, err = c.Get(ctx, req)
					detail = &pb.ChangefeedDetail{Info: info}
				}
				return err
			})
			if err != nil {
				return fmt.Errorf("failed to query changefeed: %w", err)
			}
			d, err := renderDetail(detail)
			if err != nil {
				return err
			}
			return printJSON(cmd.OutOrStdout(), d, true)
		},
	}
	idFlags(cmd, &ref)
	cmd.Flags().BoolVarP(&simple, "simple", "s", false, "only state and checkpoint")
	return cmd
}

func (e *env) pauseCmd() *cobra.Command {
	var ref pb.ChangefeedRef
	cmd := &cobra.Command{
		Use:   "pause",
		Short: "Pause a changefeed (state stopped)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			err := e.call(cmd.Context(), func(ctx context.Context, c pb.ChangefeedServiceClient) error {
				_, err := c.Pause(ctx, &ref)
				return err
			})
			if err != nil {
				return fmt.Errorf("failed to pause changefeed: %w", err)
			}
			return nil
		},
	}
	idFlags(cmd, &ref)
	return cmd
}

func (e *env) resumeCmd() *cobra.Command {
	var (
		ref       pb.ChangefeedRef
		overwrite string
		noConfirm bool
	)
	cmd := &cobra.Command{
		Use:   "resume",
		Short: "Resume a stopped or failed changefeed",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			req := &pb.ResumeChangefeedRequest{Namespace: ref.Namespace, Id: ref.Id}
			switch overwrite {
			case "":
			case "now":
				req.OverwriteCheckpointNow = true
			default:
				ts, err := strconv.ParseUint(overwrite, 10, 64)
				if err != nil || ts == 0 {
					return fmt.Errorf("--overwrite-checkpoint-ts: want a non-zero TSO or now, got %q", overwrite)
				}
				req.OverwriteCheckpointTs = ts
			}
			if overwrite != "" && !noConfirm {
				q := "Resuming from an overwritten checkpoint may lose data (a later ts) or send duplicates (an earlier ts). Continue?"
				if !confirm(cmd, q) {
					return errors.New("resume changefeed cancelled by user")
				}
			}
			err := e.call(cmd.Context(), func(ctx context.Context, c pb.ChangefeedServiceClient) error {
				_, err := c.Resume(ctx, req)
				return err
			})
			if err != nil {
				return fmt.Errorf("failed to resume changefeed: %w", err)
			}
			return nil
		},
	}
	idFlags(cmd, &ref)
	cmd.Flags().StringVar(&overwrite, "overwrite-checkpoint-ts", "", "restart from this TSO, or now")
	cmd.Flags().BoolVar(&noConfirm, "no-confirm", false, "do not ask for confirmation")
	return cmd
}

func (e *env) removeCmd() *cobra.Command {
	var ref pb.ChangefeedRef
	cmd := &cobra.Command{
		Use:   "remove",
		Short: "Remove a changefeed",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var info *pb.ChangefeedInfo
			err := e.call(cmd.Context(), func(ctx context.Context, c pb.ChangefeedServiceClient) error {
				var err error
				info, err = c.Remove(ctx, &ref)
				return err
			})
			w := cmd.OutOrStdout()
			if errors.Is(err, cdcerr.ErrNotFound) {
				// As TiCDC: removing what is not there is not a failure, so
				// cleanup scripts can be re-run.
				fmt.Fprintf(w, "Changefeed not found.\nID: %s\n", ref.Id)
				return nil
			}
			if err != nil {
				return fmt.Errorf("failed to remove changefeed: %w", err)
			}
			fmt.Fprintln(w, "Changefeed remove successfully.")
			fmt.Fprintf(w, "ID: %s\n", info.Id)
			fmt.Fprintf(w, "CheckpointTs: %d\n", info.CheckpointTs)
			fmt.Fprintf(w, "SinkURI: %s\n", info.SinkUri)
			return nil
		},
	}
	idFlags(cmd, &ref)
	return cmd
}

func (e *env) updateCmd() *cobra.Command {
	var (
		ref        pb.ChangefeedRef
		sinkURI    string
		registry   string
		configPath string
		targetTS   uint64
		noConfirm  bool
	)
	cmd := &cobra.Command{
		Use:   "update",
		Short: "Update a paused changefeed's sink, registry, config or target ts",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			req := &pb.UpdateChangefeedRequest{Namespace: ref.Namespace, Id: ref.Id}
			f := cmd.Flags()
			if f.Changed("sink-uri") {
				req.SinkUri = &sinkURI
			}
			if f.Changed("schema-registry") {
				req.SchemaRegistry = &registry
			}
			if f.Changed("config") {
				b, err := os.ReadFile(strings.TrimPrefix(configPath, "@"))
				if err != nil {
					return fmt.Errorf("--config: %w", err)
				}
				s := string(b)
				req.ConfigToml = &s
			}
			if f.Changed("target-ts") {
				req.TargetTs = &targetTS
			}
			if !noConfirm {
				// Name what changes without echoing values: they may hold
				// credentials.
				var changed []string
				for _, n := range []string{"sink-uri", "schema-registry", "config", "target-ts"} {
					if f.Changed(n) {
						changed = append(changed, "--"+n)
					}
				}
				if !confirm(cmd, fmt.Sprintf("Update %s of changefeed %s?", strings.Join(changed, ", "), ref.Id)) {
					return errors.New("update changefeed cancelled by user")
				}
			}
			var info *pb.ChangefeedInfo
			err := e.call(cmd.Context(), func(ctx context.Context, c pb.ChangefeedServiceClient) error {
				var err error
				info, err = c.Update(ctx, req)
				return err
			})
			if err != nil {
				return fmt.Errorf("failed to update changefeed: %w", err)
			}
			out, err := renderInfo(info)
			if err != nil {
				return err
			}
			w := cmd.OutOrStdout()
			fmt.Fprintln(w, "Update changefeed config successfully!")
			fmt.Fprintf(w, "ID: %s\n", info.Id)
			fmt.Fprint(w, "Info: ")
			return printJSON(w, out, false)
		},
	}
	idFlags(cmd, &ref)
	f := cmd.Flags()
	f.StringVar(&sinkURI, "sink-uri", "", "new sink URI")
	f.StringVar(&registry, "schema-registry", "", "new Schema Registry URL")
	f.StringVar(&configPath, "config", "", "new changefeed TOML file")
	f.Uint64Var(&targetTS, "target-ts", 0, "new target TSO")
	f.BoolVar(&noConfirm, "no-confirm", false, "do not ask for confirmation")
	return cmd
}
