module github.com/tidestream/tidestream/sorter

go 1.26.0

replace github.com/tidestream/tidestream/proto => ../proto
