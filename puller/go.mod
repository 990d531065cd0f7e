module github.com/tidestream/tidestream/puller

go 1.26.0

replace github.com/tidestream/tidestream/proto => ../proto
