#include <iostream>
#include <vector>
#include <map>
#include <string>
#include <algorithm>
#include <memory>
#include <unordered_map>
#include <sstream>
template<class T> struct Tree { std::map<std::string, std::vector<T>> kids; };
int main(){ std::unordered_map<std::string,int> m; std::ostringstream o; for(int i=0;i<100;i++){o<<i; m[o.str()]=i;} Tree<double> t; std::cout<<m.size()<<t.kids.size()<<"\n"; }
