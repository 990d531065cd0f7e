module github.com/tidestream/tidestream/producer

go 1.26.0

replace github.com/tidestream/tidestream/proto => ../proto
