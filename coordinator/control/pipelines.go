package control

import (
	"cmp"
	"context"
	"slices"
	"strings"

	"google.golang.org/protobuf/proto"

	"github.com/tidestream/tidestream/coordinator/cdcerr"
	"github.com/tidestream/tidestream/coordinator/sinkuri"
	"github.com/tidestream/tidestream/coordinator/store"
	pb "github.com/tidestream/tidestream/proto/tidestream/v1"
)

// Query returns a changefeed with its table pipelines: where the owner
// placed each (its assignment record) and how far it got (its producer's
// progress record). Both are read as they are in etcd, not through the
// owner, so any coordinator answers and the answer shows what the stages
// act on.
func (s *ChangefeedServer) Query(ctx context.Context, req *pb.GetChangefeedRequest) (*pb.ChangefeedDetail, error) {
	ns, err := namespaceOf(req.Namespace)
	if err != nil {
		return nil, cdcerr.ToStatus(err)
	}
	cf, err := s.cfg.Store.Get(ctx, ns, req.Id)
	if err != nil {
		return nil, cdcerr.ToStatus(err)
	}
	as, err := s.cfg.Store.ChangefeedAssignments(ctx, ns, req.Id)
	if err != nil {
		return nil, cdcerr.ToStatus(err)
	}
	var progress map[int64]*pb.PipelineStatus
	if len(as) > 0 {
		if progress, err = s.cfg.Store.PipelineProgress(ctx, ns, req.Id); err != nil {
			return nil, cdcerr.ToStatus(err)
		}
	}
	return &pb.ChangefeedDetail{Info: redacted(cf), Pipelines: tablePipelines(as, progress)}, nil
}

// tablePipelines joins assignments with progress records by pipeline id,
// ordered by table id then pipeline id.
//
// A progress record counts only when written under the assignment's epoch,
// as the owner counts it (coordinator/scheduler): one of an earlier epoch
// was made by a run that has been replaced, and the new run restarts from
// the assignment's start ts, so that is the pipeline's checkpoint until
// the new run reports. Like the owner's, the figures never go below the
// start ts.
func tablePipelines(as []*store.Assignment, progress map[int64]*pb.PipelineStatus) []*pb.TablePipeline {
	out := make([]*pb.TablePipeline, 0, len(as))
	for _, a := range as {
		r := a.Record
		p := &pb.TablePipeline{
			PipelineId:     r.GetPipelineId(),
			TableId:        r.GetTableId(),
			SchemaName:     r.GetSchemaName(),
			TableName:      r.GetTableName(),
			Epoch:          r.GetEpoch(),
			StartTs:        r.GetStartTs(),
			PullerMember:   r.GetPullerMember(),
			SorterMember:   r.GetSorterMember(),
			EncoderMember:  r.GetEncoderMember(),
			ProducerMember: r.GetProducerMember(),
		}
		st := progress[r.GetPipelineId()]
		var counted bool
		p.CheckpointTs, p.ResolvedTs, counted = store.Reached(r, st)
		if counted {
			if e := st.GetError(); e != nil {
				p.Error = redactedError(e)
				p.Fatal = st.GetFatal()
			}
		}
		out = append(out, p)
	}
	slices.SortFunc(out, func(a, b *pb.TablePipeline) int {
		return cmp.Or(cmp.Compare(a.TableId, b.TableId), cmp.Compare(a.PipelineId, b.PipelineId))
	})
	return out
}

// redactedError masks anything that looks like a credential in a
// pipeline's error: it is the producer's text (a broker's or registry's
// message, a URL it dialled), which this package did not compose.
func redactedError(e *pb.RunningError) *pb.RunningError {
	e = proto.CloneOf(e)
	e.Message = sinkuri.RedactText(e.Message)
	return e
}

// ListProcessors lists, for every changefeed, the producer members holding
// at least one of its assignments: TiCDC's processors. The producer is the
// member that runs a pipeline (it watches the assignment, pulls the chain
// and writes the progress); the puller, sorter and encoder members only
// serve what its route asks, and are shown per table by Query.
func (s *ChangefeedServer) ListProcessors(ctx context.Context, _ *pb.ListProcessorsRequest) (*pb.ListProcessorsResponse, error) {
	ps, err := s.cfg.Store.Placements(ctx)
	if err != nil {
		return nil, cdcerr.ToStatus(err)
	}
	out := make([]*pb.Processor, 0, len(ps))
	for _, p := range ps {
		out = append(out, &pb.Processor{Namespace: p.Namespace, ChangefeedId: p.Changefeed, MemberId: p.Member})
	}
	slices.SortFunc(out, func(a, b *pb.Processor) int {
		return cmp.Or(strings.Compare(a.Namespace, b.Namespace), strings.Compare(a.ChangefeedId, b.ChangefeedId), strings.Compare(a.MemberId, b.MemberId))
	})
	return &pb.ListProcessorsResponse{Processors: out}, nil
}
