package cli

import (
	"encoding/json"
	"maps"
	"slices"
	"time"

	"google.golang.org/protobuf/encoding/protojson"

	"github.com/tidestream/tidestream/coordinator/changefeed"
	pb "github.com/tidestream/tidestream/proto/tidestream/v1"
)

// tsoTime is the wall-clock time of a TSO (its physical part, in ms).
func tsoTime(ts uint64) time.Time {
	return time.UnixMilli(int64(ts >> 18))
}

// checkpointFormat is TiCDC's list/query checkpoint format, in the local zone.
const checkpointFormat = "2006-01-02 15:04:05.000"

type errorJSON struct {
	Time    string `json:"time,omitempty"`
	Addr    string `json:"addr"`
	Code    string `json:"code"`
	Message string `json:"message"`
}

func renderError(e *pb.RunningError) *errorJSON {
	if e == nil {
		return nil
	}
	out := &errorJSON{Addr: e.Addr, Code: e.Code, Message: e.Message}
	if e.Time != nil {
		out.Time = e.Time.AsTime().Local().Format(time.RFC3339Nano)
	}
	return out
}

// infoJSON is TiCDC's API v2 ChangeFeedInfo shape (snake_case keys).
type infoJSON struct {
	UpstreamID     uint64          `json:"upstream_id"`
	Namespace      string          `json:"namespace"`
	ID             string          `json:"id"`
	SinkURI        string          `json:"sink_uri"`
	CreateTime     string          `json:"create_time"`
	StartTs        uint64          `json:"start_ts"`
	TargetTs       uint64          `json:"target_ts,omitempty"`
	Config         json.RawMessage `json:"config"`
	State          string          `json:"state"`
	Error          *errorJSON      `json:"error,omitempty"`
	CreatorVersion string          `json:"creator_version"`
	ResolvedTs     uint64          `json:"resolved_ts"`
	CheckpointTs   uint64          `json:"checkpoint_ts"`
	CheckpointTime string          `json:"checkpoint_time"`
}

// configJSON renders the replica config with TiCDC's snake_case keys. Every
// field is shown, defaults included, so the user sees what is in force.
var configJSON = protojson.MarshalOptions{UseProtoNames: true, EmitUnpopulated: true}

func renderInfo(info *pb.ChangefeedInfo) (infoJSON, error) {
	cfg, err := configJSON.Marshal(info.GetConfig())
	if err != nil {
		return infoJSON{}, err
	}
	// protojson output is not stable byte for byte; compact it so the
	// single-line Info stays single-line.
	var compact json.RawMessage
	if err := json.Unmarshal(cfg, &compact); err != nil {
		return infoJSON{}, err
	}
	out := infoJSON{
		UpstreamID:     info.UpstreamId,
		Namespace:      info.Namespace,
		ID:             info.Id,
		SinkURI:        info.SinkUri,
		StartTs:        info.StartTs,
		TargetTs:       info.TargetTs,
		Config:         compact,
		State:          changefeed.StateName(info.State),
		Error:          renderError(info.Error),
		CreatorVersion: info.CreatorVersion,
		ResolvedTs:     info.ResolvedTs,
		CheckpointTs:   info.CheckpointTs,
		CheckpointTime: tsoTime(info.CheckpointTs).Local().Format(checkpointFormat),
	}
	if info.CreateTime != nil {
		out.CreateTime = info.CreateTime.AsTime().Local().Format(time.RFC3339Nano)
	}
	return out, nil
}

// summaryJSON is one entry of `changefeed list`.
type summaryJSON struct {
	ID        string `json:"id"`
	Namespace string `json:"namespace"`
	Summary   struct {
		State      string     `json:"state"`
		TSO        uint64     `json:"tso"`
		Checkpoint string     `json:"checkpoint"`
		Error      *errorJSON `json:"error"`
	} `json:"summary"`
}

func renderSummary(info *pb.ChangefeedInfo) summaryJSON {
	var s summaryJSON
	s.ID = info.Id
	s.Namespace = info.Namespace
	s.Summary.State = changefeed.StateName(info.State)
	s.Summary.TSO = info.CheckpointTs
	s.Summary.Checkpoint = tsoTime(info.CheckpointTs).Local().Format(checkpointFormat)
	// TiCDC forces error to null while the changefeed is normal.
	if info.State != pb.ChangefeedState_CHANGEFEED_STATE_NORMAL {
		s.Summary.Error = renderError(info.Error)
	}
	return s
}

// simpleJSON is `changefeed query -s`.
type simpleJSON struct {
	UpstreamID     uint64     `json:"upstream_id"`
	Namespace      string     `json:"namespace"`
	ID             string     `json:"id"`
	State          string     `json:"state"`
	CheckpointTso  uint64     `json:"checkpoint_tso"`
	CheckpointTime string     `json:"checkpoint_time"`
	Error          *errorJSON `json:"error"`
}

// detailJSON is `changefeed query` without -s: TiCDC's keys in TiCDC's
// order, then ours.
type detailJSON struct {
	UpstreamID     uint64          `json:"upstream_id"`
	Namespace      string          `json:"namespace"`
	ID             string          `json:"id"`
	SinkURI        string          `json:"sink_uri"`
	Config         json.RawMessage `json:"config"`
	CreateTime     string          `json:"create_time"`
	StartTs        uint64          `json:"start_ts"`
	ResolvedTs     uint64          `json:"resolved_ts"`
	TargetTs       uint64          `json:"target_ts"`
	CheckpointTso  uint64          `json:"checkpoint_tso"`
	CheckpointTime string          `json:"checkpoint_time"`
	State          string          `json:"state"`
	Error          *errorJSON      `json:"error"`
	CreatorVersion string          `json:"creator_version"`
	// TaskStatus is TiCDC's: per member running pipelines of the
	// changefeed (its producer), the tables it runs. Empty while nothing
	// is placed.
	TaskStatus []taskStatusJSON `json:"task_status"`
	// Pipelines is ours: every table pipeline with its placement and
	// progress. The key carries our name so that no TiCDC version's key can
	// ever mean something else here.
	Pipelines []pipelineJSON `json:"tidestream_pipelines"`
}

// taskStatusJSON is one entry of TiCDC's task_status.
type taskStatusJSON struct {
	CaptureID string  `json:"capture_id"`
	TableIDs  []int64 `json:"table_ids"`
}

// pipelineJSON is one entry of tidestream_pipelines. The checkpoint keys
// and format are the changefeed's own (checkpoint_tso, checkpoint_time);
// member ids are those of `capture list`.
type pipelineJSON struct {
	TableID        int64      `json:"table_id"`
	SchemaName     string     `json:"schema_name"`
	TableName      string     `json:"table_name"`
	PipelineID     int64      `json:"pipeline_id"`
	Epoch          uint64     `json:"epoch"`
	CheckpointTso  uint64     `json:"checkpoint_tso"`
	CheckpointTime string     `json:"checkpoint_time"`
	ResolvedTs     uint64     `json:"resolved_ts"`
	PullerMember   string     `json:"puller_member"`
	SorterMember   string     `json:"sorter_member"`
	EncoderMember  string     `json:"encoder_member"`
	ProducerMember string     `json:"producer_member"`
	Error          *errorJSON `json:"error"`
}

func renderDetail(d *pb.ChangefeedDetail) (detailJSON, error) {
	info := d.GetInfo()
	base, err := renderInfo(info)
	if err != nil {
		return detailJSON{}, err
	}
	out := detailJSON{
		UpstreamID:     base.UpstreamID,
		Namespace:      base.Namespace,
		ID:             base.ID,
		SinkURI:        base.SinkURI,
		Config:         base.Config,
		CreateTime:     base.CreateTime,
		StartTs:        base.StartTs,
		ResolvedTs:     base.ResolvedTs,
		TargetTs:       base.TargetTs,
		CheckpointTso:  base.CheckpointTs,
		CheckpointTime: base.CheckpointTime,
		State:          base.State,
		Error:          base.Error,
		CreatorVersion: base.CreatorVersion,
		TaskStatus:     renderTaskStatus(d.GetPipelines()),
		Pipelines:      make([]pipelineJSON, 0, len(d.GetPipelines())),
	}
	for _, p := range d.GetPipelines() {
		out.Pipelines = append(out.Pipelines, pipelineJSON{
			TableID:        p.GetTableId(),
			SchemaName:     p.GetSchemaName(),
			TableName:      p.GetTableName(),
			PipelineID:     p.GetPipelineId(),
			Epoch:          p.GetEpoch(),
			CheckpointTso:  p.GetCheckpointTs(),
			CheckpointTime: tsoTime(p.GetCheckpointTs()).Local().Format(checkpointFormat),
			ResolvedTs:     p.GetResolvedTs(),
			PullerMember:   p.GetPullerMember(),
			SorterMember:   p.GetSorterMember(),
			EncoderMember:  p.GetEncoderMember(),
			ProducerMember: p.GetProducerMember(),
			Error:          renderError(p.GetError()),
		})
	}
	return out, nil
}

// renderTaskStatus groups the pipelines by the member running them, as
// TiCDC groups tables by capture: captures and table ids ascending.
func renderTaskStatus(ps []*pb.TablePipeline) []taskStatusJSON {
	byMember := map[string][]int64{}
	for _, p := range ps {
		byMember[p.GetProducerMember()] = append(byMember[p.GetProducerMember()], p.GetTableId())
	}
	out := make([]taskStatusJSON, 0, len(byMember))
	for _, m := range slices.Sorted(maps.Keys(byMember)) {
		ids := byMember[m]
		slices.Sort(ids)
		out = append(out, taskStatusJSON{CaptureID: m, TableIDs: slices.Compact(ids)})
	}
	return out
}
