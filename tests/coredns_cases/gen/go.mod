module kdns.test/coredns-cases-gen

go 1.22
