package registry_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/sr"
	"go.uber.org/goleak"

	"github.com/tidestream/tidestream/services/devstack/registry"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// Schemas named for the change they make to base, a record the encoder
// would write for a table (id INT, d INT).
const (
	base = `{"type":"record","name":"t","fields":[{"name":"id","type":"int"},{"name":"d","type":"int"}]}`
	// addOptional adds a column with a default: readable both ways.
	addOptional = `{"type":"record","name":"t","fields":[{"name":"id","type":"int"},{"name":"d","type":"int"},{"name":"c","type":["null","string"],"default":null}]}`
	// addRequired adds a column without a default: the new reader has no
	// value for c in old data (not BACKWARD); old readers skip it (FORWARD).
	addRequired = `{"type":"record","name":"t","fields":[{"name":"id","type":"int"},{"name":"d","type":"int"},{"name":"c","type":"string"}]}`
	// dropRequired drops d, which has no default: the new reader ignores
	// d (BACKWARD); old readers find no d in new data (not FORWARD).
	dropRequired = `{"type":"record","name":"t","fields":[{"name":"id","type":"int"}]}`
	// widen turns d into a long: long reads int (BACKWARD), int cannot
	// read long (not FORWARD).
	widen = `{"type":"record","name":"t","fields":[{"name":"id","type":"int"},{"name":"d","type":"long"}]}`
	// retype turns d into a string: neither way.
	retype = `{"type":"record","name":"t","fields":[{"name":"id","type":"int"},{"name":"d","type":"string"}]}`
)

type fixture struct {
	url string
	cl  *sr.Client
	hc  *http.Client
}

func newFixture(t *testing.T, cfg registry.Config, opts ...sr.ClientOpt) *fixture {
	t.Helper()
	reg, err := registry.New(cfg)
	require.NoError(t, err)
	srv := httptest.NewServer(reg)
	t.Cleanup(srv.Close)
	// The server's own client: Close tears down its idle connections, so
	// goleak sees no keep-alive goroutines.
	cl, err := sr.NewClient(append([]sr.ClientOpt{sr.URLs(srv.URL), sr.HTTPClient(srv.Client())}, opts...)...)
	require.NoError(t, err)
	return &fixture{url: srv.URL, cl: cl, hc: srv.Client()}
}

func avro(s string) sr.Schema { return sr.Schema{Schema: s, Type: sr.TypeAvro} }

func (f *fixture) register(t *testing.T, subject, schema string) (int, error) {
	t.Helper()
	return f.cl.RegisterSchema(context.Background(), subject, avro(schema), -1, -1)
}

func (f *fixture) setLevel(t *testing.T, level sr.CompatibilityLevel, subjects ...string) {
	t.Helper()
	for _, res := range f.cl.SetCompatibility(context.Background(), sr.SetCompatibility{Level: level}, subjects...) {
		require.NoError(t, res.Err)
		require.Equal(t, level, res.Level)
	}
}

// compatible asks the compatibility endpoint; version -1 is latest, -2 the
// versions the subject's level names.
func (f *fixture) compatible(t *testing.T, subject string, version int, schema string) sr.CheckCompatibilityResult {
	t.Helper()
	ctx := sr.WithParams(context.Background(), sr.Verbose)
	res, err := f.cl.CheckCompatibility(ctx, subject, version, avro(schema))
	require.NoError(t, err)
	return res
}

// raw sends a request without sr.Client and returns the status and body.
func (f *fixture) raw(t *testing.T, method, path, body string, auth func(*http.Request)) (int, string) {
	t.Helper()
	req, err := http.NewRequest(method, f.url+path, strings.NewReader(body))
	require.NoError(t, err)
	req.Header.Set("Content-Type", "application/vnd.schemaregistry.v1+json")
	if auth != nil {
		auth(req)
	}
	resp, err := f.hc.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return resp.StatusCode, string(b)
}

func responseError(t *testing.T, err error) *sr.ResponseError {
	t.Helper()
	var re *sr.ResponseError
	require.True(t, errors.As(err, &re), "want a registry error answer, got %v", err)
	return re
}

func TestIncompatibleUnderBackwardIs409WithConfluentBody(t *testing.T) {
	f := newFixture(t, registry.Config{})
	_, err := f.register(t, "t-value", base)
	require.NoError(t, err)

	_, err = f.register(t, "t-value", addRequired)
	re := responseError(t, err)
	require.Equal(t, http.StatusConflict, re.StatusCode)
	require.Equal(t, 409, re.ErrorCode)
	require.True(t, strings.HasPrefix(re.Message,
		`Schema being registered is incompatible with an earlier schema for subject "t-value", details: [{description:'the new schema cannot read data written with version 1: `),
		re.Message)
	require.Contains(t, re.Message, "{oldSchemaVersion: 1}")
	require.Contains(t, re.Message, "{oldSchema: '"+base+"'}")
	require.Contains(t, re.Message, "{compatibility: 'BACKWARD'}")

	// The body has exactly Confluent's two keys.
	var body map[string]any
	require.NoError(t, json.Unmarshal(re.Raw, &body))
	require.Len(t, body, 2)
	require.EqualValues(t, 409, body["error_code"])

	versions, err := f.cl.SubjectVersions(context.Background(), "t-value")
	require.NoError(t, err)
	require.Equal(t, []int{1}, versions, "a rejected schema must not be stored")
}

func TestCompatibleSchemaGetsNewVersion(t *testing.T) {
	f := newFixture(t, registry.Config{})
	ctx := context.Background()
	id1, err := f.register(t, "t-value", base)
	require.NoError(t, err)
	id2, err := f.register(t, "t-value", dropRequired)
	require.NoError(t, err)
	require.NotEqual(t, id1, id2)
	ss, err := f.cl.SchemaByVersion(ctx, "t-value", 2)
	require.NoError(t, err)
	require.Equal(t, id2, ss.ID)

	// base cannot read data written with dropRequired, but it is already
	// version 1: Confluent answers its id without checking again.
	again, err := f.register(t, "t-value", base)
	require.NoError(t, err)
	require.Equal(t, id1, again)
	versions, err := f.cl.SubjectVersions(ctx, "t-value")
	require.NoError(t, err)
	require.Equal(t, []int{1, 2}, versions)
}

func TestSubjectConfigOverridesGlobal(t *testing.T) {
	f := newFixture(t, registry.Config{})
	ctx := context.Background()
	for _, s := range []string{"own-value", "global-value"} {
		_, err := f.register(t, s, base)
		require.NoError(t, err)
	}

	f.setLevel(t, sr.CompatNone, "own-value")
	_, err := f.register(t, "own-value", retype)
	require.NoError(t, err, "NONE on the subject wins over the global BACKWARD")
	_, err = f.register(t, "global-value", retype)
	require.Equal(t, 409, responseError(t, err).ErrorCode)

	// Reads: the subject's own level; none without defaultToGlobal.
	res := f.cl.Compatibility(ctx, "own-value", "global-value", sr.GlobalSubject)
	require.NoError(t, res[0].Err)
	require.Equal(t, sr.CompatNone, res[0].Level)
	require.Equal(t, sr.ErrSubjectLevelCompatibilityNotConfigured.Code, responseError(t, res[1].Err).ErrorCode)
	require.NoError(t, res[2].Err)
	require.Equal(t, sr.CompatBackward, res[2].Level)
	res = f.cl.Compatibility(sr.WithParams(ctx, sr.DefaultToGlobal), "global-value")
	require.NoError(t, res[0].Err)
	require.Equal(t, sr.CompatBackward, res[0].Level)

	// The global level moves subjects without their own.
	f.setLevel(t, sr.CompatForward)
	_, err = f.register(t, "global-value", addRequired)
	require.NoError(t, err, "FORWARD: the old schema reads data with an extra field")

	// Deleting the subject's level hands it back to the global one.
	del := f.cl.ResetCompatibility(ctx, "own-value")
	require.NoError(t, del[0].Err)
	require.Equal(t, sr.CompatNone, del[0].Level, "DELETE answers the level it removed")
	_, err = f.register(t, "own-value", widen)
	require.Equal(t, 409, responseError(t, err).ErrorCode, "FORWARD: retype cannot read widen's long d")

	// Deleting the global level restores BACKWARD.
	del = f.cl.ResetCompatibility(ctx)
	require.NoError(t, del[0].Err)
	require.Equal(t, sr.CompatForward, del[0].Level)
	res = f.cl.Compatibility(ctx)
	require.Equal(t, sr.CompatBackward, res[0].Level)

	// Deleting a level that is not there.
	status, body := f.raw(t, http.MethodDelete, "/config/global-value", "", nil)
	require.Equal(t, http.StatusNotFound, status)
	require.Contains(t, body, `"error_code":40408`)
	status, body = f.raw(t, http.MethodDelete, "/config/nosuch", "", nil)
	require.Equal(t, http.StatusNotFound, status)
	require.Contains(t, body, `"error_code":40401`)
}

// TestTransitiveDiffersFromLatestOnly builds v1 {id, a string default ""}
// → v2 {id} (compatible both ways) → candidate {id, a int default 0}: the
// candidate and v2 read each other's data (a has a default in both
// readers), but the candidate cannot read v1's (string a into int a).
func TestTransitiveDiffersFromLatestOnly(t *testing.T) {
	const (
		v1        = `{"type":"record","name":"t","fields":[{"name":"id","type":"int"},{"name":"a","type":"string","default":""}]}`
		v2        = `{"type":"record","name":"t","fields":[{"name":"id","type":"int"}]}`
		candidate = `{"type":"record","name":"t","fields":[{"name":"id","type":"int"},{"name":"a","type":"int","default":0}]}`
	)
	f := newFixture(t, registry.Config{})
	for _, tc := range []struct {
		level sr.CompatibilityLevel
		want  bool
	}{
		{sr.CompatBackward, true},
		{sr.CompatBackwardTransitive, false},
		{sr.CompatFull, true},
		{sr.CompatFullTransitive, false},
	} {
		t.Run(tc.level.String(), func(t *testing.T) {
			subject := "tr-" + tc.level.String()
			f.setLevel(t, tc.level, subject)
			for _, s := range []string{v1, v2} {
				_, err := f.register(t, subject, s)
				require.NoError(t, err)
			}
			// Against one named version transitivity does not matter.
			require.True(t, f.compatible(t, subject, -1, candidate).Is)
			one := f.compatible(t, subject, 1, candidate)
			require.False(t, one.Is)
			require.Contains(t, one.Messages, "{oldSchemaVersion: 1}")
			// Against the versions the level names, it does.
			all := f.compatible(t, subject, -2, candidate)
			require.Equal(t, tc.want, all.Is, all.Messages)

			_, err := f.register(t, subject, candidate)
			if tc.want {
				require.NoError(t, err)
				return
			}
			re := responseError(t, err)
			require.Equal(t, 409, re.ErrorCode)
			require.Contains(t, re.Message, "{oldSchemaVersion: 1}")
			require.Contains(t, re.Message, fmt.Sprintf("{compatibility: '%s'}", tc.level))
		})
	}
}

// TestLevels checks every level against one change each, and that the
// compatibility endpoint (latest, and the versions the level names)
// agrees with what register then does.
func TestLevels(t *testing.T) {
	changes := []struct {
		name              string
		schema            string
		backward, forward bool
	}{
		{"addOptional", addOptional, true, true},
		{"addRequired", addRequired, false, true},
		{"dropRequired", dropRequired, true, false},
		{"widen", widen, true, false},
		{"retype", retype, false, false},
		{"same", base, true, true},
	}
	levels := []sr.CompatibilityLevel{
		sr.CompatNone, sr.CompatBackward, sr.CompatBackwardTransitive, sr.CompatForward,
		sr.CompatForwardTransitive, sr.CompatFull, sr.CompatFullTransitive,
	}
	f := newFixture(t, registry.Config{})
	for _, level := range levels {
		for _, c := range changes {
			t.Run(level.String()+"/"+c.name, func(t *testing.T) {
				var want bool
				switch level {
				case sr.CompatNone:
					want = true
				case sr.CompatBackward, sr.CompatBackwardTransitive:
					want = c.backward
				case sr.CompatForward, sr.CompatForwardTransitive:
					want = c.forward
				case sr.CompatFull, sr.CompatFullTransitive:
					want = c.backward && c.forward
				}
				subject := level.String() + "-" + c.name
				f.setLevel(t, level, subject)
				_, err := f.register(t, subject, base)
				require.NoError(t, err)

				latest := f.compatible(t, subject, -1, c.schema)
				require.Equal(t, want, latest.Is, latest.Messages)
				require.Equal(t, want, f.compatible(t, subject, -2, c.schema).Is)
				if !want {
					require.Contains(t, latest.Messages, fmt.Sprintf("{compatibility: '%s'}", level))
				} else {
					require.Empty(t, latest.Messages)
				}

				_, err = f.register(t, subject, c.schema)
				if want {
					require.NoError(t, err)
				} else {
					require.Equal(t, 409, responseError(t, err).ErrorCode)
				}
			})
		}
	}
}

func TestCompatibilityEndpointWithoutVerbose(t *testing.T) {
	f := newFixture(t, registry.Config{})
	_, err := f.register(t, "t-value", base)
	require.NoError(t, err)
	status, body := f.raw(t, http.MethodPost, "/compatibility/subjects/t-value/versions/latest", `{"schema":`+quote(retype)+`}`, nil)
	require.Equal(t, http.StatusOK, status)
	require.JSONEq(t, `{"is_compatible":false}`, body)
	status, body = f.raw(t, http.MethodPost, "/compatibility/subjects/t-value/versions/latest?verbose=true", `{"schema":`+quote(addOptional)+`}`, nil)
	require.Equal(t, http.StatusOK, status)
	require.JSONEq(t, `{"is_compatible":true,"messages":[]}`, body)
	// No versions yet: nothing to be incompatible with.
	status, body = f.raw(t, http.MethodPost, "/compatibility/subjects/new-value/versions", `{"schema":`+quote(retype)+`}`, nil)
	require.Equal(t, http.StatusOK, status)
	require.JSONEq(t, `{"is_compatible":true}`, body)
}

func TestConfluentErrors(t *testing.T) {
	f := newFixture(t, registry.Config{})
	_, err := f.register(t, "t-value", base)
	require.NoError(t, err)

	for _, tc := range []struct {
		name, method, path, body string
		status, code             int
	}{
		{"invalid avro", http.MethodPost, "/subjects/t-value/versions",
			`{"schema":` + quote(`{"type":"record","name":"t","fields":[{"name":"a","type":"nosuch"}]}`) + `}`, 422, 42201},
		{"not json", http.MethodPost, "/subjects/t-value/versions", `{"schema":"{"}`, 422, 42201},
		{"invalid avro on compatibility", http.MethodPost, "/compatibility/subjects/t-value/versions/latest",
			`{"schema":"{\"type\":\"nosuch\"}"}`, 422, 42201},
		{"subject not found", http.MethodPost, "/compatibility/subjects/nosuch/versions/latest", `{"schema":` + quote(base) + `}`, 404, 40401},
		{"version not found", http.MethodPost, "/compatibility/subjects/t-value/versions/7", `{"schema":` + quote(base) + `}`, 404, 40402},
		{"invalid version", http.MethodPost, "/compatibility/subjects/t-value/versions/first", `{"schema":` + quote(base) + `}`, 422, 42202},
		{"schema not found", http.MethodGet, "/schemas/ids/999", "", 404, 40403},
		{"subject not found on read", http.MethodGet, "/subjects/nosuch/versions/latest", "", 404, 40401},
		{"invalid level", http.MethodPut, "/config", `{"compatibility":"SIDEWAYS"}`, 422, 42203},
		{"missing level", http.MethodPut, "/config/t-value", `{}`, 422, 42203},
	} {
		t.Run(tc.name, func(t *testing.T) {
			status, body := f.raw(t, tc.method, tc.path, tc.body, nil)
			require.Equal(t, tc.status, status, body)
			var e struct {
				Code    int    `json:"error_code"`
				Message string `json:"message"`
			}
			require.NoError(t, json.Unmarshal([]byte(body), &e), body)
			require.Equal(t, tc.code, e.Code, body)
			require.NotEmpty(t, e.Message)
		})
	}
	// Nothing invalid was stored.
	versions, err := f.cl.SubjectVersions(context.Background(), "t-value")
	require.NoError(t, err)
	require.Equal(t, []int{1}, versions)
}

func TestBasicAuth(t *testing.T) {
	users := map[string]string{"alice": "s3cret+/=", "bob": "hunter2"}
	f := newFixture(t, registry.Config{Users: users})
	const unauthorized = `{"error_code":401,"message":"Unauthorized"}`

	for name, auth := range map[string]func(*http.Request){
		"missing":      nil,
		"wrong":        func(r *http.Request) { r.SetBasicAuth("alice", "hunter2") },
		"unknown user": func(r *http.Request) { r.SetBasicAuth("carol", "s3cret+/=") },
		"bearer":       func(r *http.Request) { r.Header.Set("Authorization", "Bearer s3cret+/=") },
	} {
		t.Run(name, func(t *testing.T) {
			for _, path := range []string{"/", "/config", "/subjects"} {
				status, body := f.raw(t, http.MethodGet, path, "", auth)
				require.Equal(t, http.StatusUnauthorized, status, path)
				require.Equal(t, unauthorized, body, path)
			}
		})
	}

	status, body := f.raw(t, http.MethodGet, "/", "", func(r *http.Request) { r.SetBasicAuth("bob", "hunter2") })
	require.Equal(t, http.StatusOK, status)
	require.Equal(t, "{}", body, "the root probe wants exactly {}")

	// sr.Client with credentials, the way the encoder connects.
	authed, err := sr.NewClient(sr.URLs(f.url), sr.HTTPClient(f.hc), sr.BasicAuth("alice", users["alice"]))
	require.NoError(t, err)
	id, err := authed.RegisterSchema(context.Background(), "t-value", avro(base), -1, -1)
	require.NoError(t, err)
	require.Positive(t, id)
	_, err = f.register(t, "t-value", base)
	require.Equal(t, http.StatusUnauthorized, responseError(t, err).StatusCode)
}

func TestConfigValidate(t *testing.T) {
	_, err := registry.New(registry.Config{Users: map[string]string{"": "x"}})
	require.ErrorContains(t, err, "registry: Config.Users: empty user name")
	_, err = registry.New(registry.Config{GlobalLevel: 42})
	require.ErrorContains(t, err, "registry: Config.GlobalLevel")

	f := newFixture(t, registry.Config{GlobalLevel: sr.CompatNone})
	_, err = f.register(t, "t-value", base)
	require.NoError(t, err)
	_, err = f.register(t, "t-value", retype)
	require.NoError(t, err, "the configured global level applies from the start")
}

// TestConcurrentRegistrationsAreSerialised races schemas that are each
// BACKWARD-compatible with version 1 but not with one another: whichever
// lands first becomes the latest, so every other one must be refused. A
// check that did not hold the store still could pass several.
func TestConcurrentRegistrationsAreSerialised(t *testing.T) {
	f := newFixture(t, registry.Config{})
	_, err := f.register(t, "race-value", `{"type":"record","name":"t","fields":[{"name":"id","type":"int"}]}`)
	require.NoError(t, err)
	xs := []string{
		`{"type":"int","default":0}`, `{"type":"boolean","default":false}`, `{"type":"string","default":""}`,
		`{"type":{"type":"array","items":"int"},"default":[]}`, `{"type":{"type":"map","values":"int"},"default":{}}`,
	}
	errs := make(chan error, len(xs))
	for _, x := range xs {
		x = strings.Replace(x, `{"type":`, `{"name":"x","type":`, 1)
		schema := `{"type":"record","name":"t","fields":[{"name":"id","type":"int"},` + x + `]}`
		go func() {
			_, err := f.register(t, "race-value", schema)
			errs <- err
		}()
	}
	var ok int
	for range xs {
		if err := <-errs; err == nil {
			ok++
		} else {
			require.Equal(t, 409, responseError(t, err).ErrorCode)
		}
	}
	require.Equal(t, 1, ok)
	versions, err := f.cl.SubjectVersions(context.Background(), "race-value")
	require.NoError(t, err)
	require.Equal(t, []int{1, 2}, versions)
}

// TestReferences registers a schema that names a type from another
// subject, then checks a change to it: both the new schema and the stored
// one are parsed with the reference resolved.
func TestReferences(t *testing.T) {
	f := newFixture(t, registry.Config{})
	ctx := context.Background()
	_, err := f.register(t, "address-value", `{"type":"record","name":"Address","namespace":"ex","fields":[{"name":"city","type":"string"}]}`)
	require.NoError(t, err)
	refs := []sr.SchemaReference{{Name: "ex.Address", Subject: "address-value", Version: 1}}
	user := func(fields string) sr.Schema {
		return sr.Schema{
			Schema:     `{"type":"record","name":"User","namespace":"ex","fields":[{"name":"home","type":"ex.Address"}` + fields + `]}`,
			References: refs,
		}
	}
	_, err = f.cl.RegisterSchema(ctx, "user-value", user(""), -1, -1)
	require.NoError(t, err)
	_, err = f.cl.RegisterSchema(ctx, "user-value", user(`,{"name":"age","type":"int"}`), -1, -1)
	require.Equal(t, 409, responseError(t, err).ErrorCode)
	_, err = f.cl.RegisterSchema(ctx, "user-value", user(`,{"name":"age","type":"int","default":0}`), -1, -1)
	require.NoError(t, err)

	// Without the reference the type name is unknown: invalid, not 409.
	_, err = f.register(t, "user-value", user(`,{"name":"n","type":"int"}`).Schema)
	require.Equal(t, 42201, responseError(t, err).ErrorCode)
}

func quote(s string) string {
	b, _ := json.Marshal(s)
	return string(b)
}
