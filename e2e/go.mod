module github.com/tidestream/tidestream/e2e

go 1.26.0

replace github.com/tidestream/tidestream/proto => ../proto

replace github.com/tidestream/tidestream/coordinator => ../coordinator

replace github.com/tidestream/tidestream/services => ../services

require (
	github.com/stretchr/testify v1.12.1
	github.com/tidestream/tidestream/coordinator v0.0.0-00010101000000-000000000000
	github.com/tidestream/tidestream/proto v0.0.0-00010101000000-000000000000
	google.golang.org/grpc v1.83.2
)

require (
	filippo.io/edwards25519 v1.1.0 // indirect
	github.com/go-sql-driver/mysql v1.9.3
	github.com/gogo/protobuf v1.3.2 // indirect
	github.com/golang/protobuf v1.5.4 // indirect
	github.com/pingcap/kvproto v0.0.0-20260331120830-0d407c8b3f6e // indirect
	github.com/pkg/errors v0.9.1 // indirect
	github.com/tikv/client-go/v2 v2.0.8-0.20260403030309-a888f4238c9b
	go.yaml.in/yaml/v3 v3.0.5 // indirect
	golang.org/x/net v0.61.0 // indirect
	golang.org/x/sys v0.49.0 // indirect
	golang.org/x/text v0.43.0 // indirect
	google.golang.org/genproto/googleapis/rpc v0.0.0-20260803160001-6ac0973c030d // indirect
	google.golang.org/protobuf v1.36.11 // indirect
)
